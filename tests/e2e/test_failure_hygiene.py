"""Error hygiene and request ids on the real stack (every service a process, real Redis, the frontend)."""

from __future__ import annotations

import asyncio
import re

import grpc
import httpx
import pytest

from supernode.launcher import LocalStack, StackConfig

pytestmark = pytest.mark.e2e
ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+|:\d{2,5}\b|[A-Z][a-z]+Error\b")


async def test_reused_ids_malformed_protobuf_and_outage_messages(tmp_path_factory):
    stack = LocalStack(
        StackConfig(num_prefill=1, num_decode=1, with_frontend=True, ephemeral_ports=True,
                    log_dir=tmp_path_factory.mktemp("hygiene"))
    )  # fmt: skip
    try:
        await stack.start()
        base = f"http://127.0.0.1:{stack.ports['frontend']}"
        body = {"model": "deepseek-r1", "prompt": list(range(300, 556)), "max_tokens": 24, "stream": False}
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            # the same X-Request-Id on concurrent requests: each succeeds and keeps the client's id
            replies = await asyncio.gather(
                *(http.post("/v1/completions", json=body | {"seed": s}, headers={"X-Request-Id": "dup"})
                  for s in range(4))
            )  # fmt: skip
            assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
            assert {r.headers["X-Request-Id"] for r in replies} == {"dup"}
            assert {r.json()["id"] for r in replies} == {"cmpl-dup"}

            # bytes that are not a GenerateRequest: INVALID_ARGUMENT, not UNKNOWN with a class name
            async with grpc.aio.insecure_channel(stack.router_address) as channel:
                call = channel.unary_stream("/supernode.v1.Router/Generate")(b"\x12\xff\xff\xff")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in call:
                        pass
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            # Redis down: a clear 503 that names no internal host, port or exception class
            stack.stop_redis()
            down = await http.post("/v1/completions", json=body | {"seed": 99})
            assert down.status_code == 503, down.text
            message = down.json()["error"]["message"]
            assert "redis" in message and not ADDRESS.search(message), message
            stack.start_redis()
    finally:
        stack.stop()
