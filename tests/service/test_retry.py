"""gRPC's own retry policy (issue item 8): idempotent calls are retried on UNAVAILABLE by the channel,
the others never are. Real gRPC on loopback, a Router servicer that fails its first calls."""

from __future__ import annotations

import json

import grpc
import pytest

from supernode.runtime.errors import UnavailableError
from supernode.runtime.retry import IDEMPOTENT, MAX_ATTEMPTS, service_config
from supernode.sdk import AsyncClient
from supernode.v1 import router_pb2, router_pb2_grpc


class Flaky(router_pb2_grpc.RouterServicer):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = {"Status": 0, "Generate": 0}

    async def Status(self, request, context):  # noqa: N802
        self.calls["Status"] += 1
        if self.calls["Status"] <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return router_pb2.StatusResponse()

    async def Generate(self, request, context):  # noqa: N802
        self.calls["Generate"] += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        yield router_pb2.GenerateChunk()  # pragma: no cover


async def serve(servicer: Flaky) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_policy_names_only_idempotent_methods() -> None:
    config = json.loads(service_config())
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert names == set(IDEMPOTENT)
    assert not names & {("supernode.v1.Router", "Generate"), ("supernode.v1.KvPool", "Put"),
                        ("supernode.v1.Prefill", "Prefill"), ("supernode.v1.Decode", "Reserve")}  # fmt: skip
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


@pytest.mark.parametrize(("failures", "is_ok"), [(MAX_ATTEMPTS - 1, True), (MAX_ATTEMPTS, False)])
async def test_idempotent_call_is_retried_by_the_channel(failures: int, is_ok: bool) -> None:
    servicer = Flaky(failures)
    server, address = await serve(servicer)
    try:
        async with AsyncClient(address, timeout_s=10) as client:
            if is_ok:
                await client.status()
            else:
                with pytest.raises(UnavailableError):
                    await client.status()
    finally:
        await server.stop(None)
    assert servicer.calls["Status"] == min(failures + 1, MAX_ATTEMPTS)


async def test_generate_is_never_retried() -> None:
    servicer = Flaky(0)
    server, address = await serve(servicer)
    try:
        async with AsyncClient(address, timeout_s=10) as client:
            with pytest.raises(UnavailableError):
                await client.complete("hi", max_tokens=2)
    finally:
        await server.stop(None)
    assert servicer.calls["Generate"] == 1
