"""`python -m supernode.frontend` as a real process (real SDK, real gRPC): serves, then drains on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import httpx

from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.processes import free_port

NUM_TOKENS = 30


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            assert proc.returncode is None, "frontend exited during startup"
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("frontend did not become healthy")


async def test_sigterm_lets_the_inflight_stream_finish() -> None:
    async with serve_fake_router(FakeRouter(chunk_delay_s=0.05)) as (address, router):
        port = free_port()
        env = os.environ | {
            "SUPERNODE_ROUTER__ADDRESS": address,
            "SUPERNODE_FRONTEND__PORT": str(port),
            "SUPERNODE_RUNTIME__BIND_HOST": "127.0.0.1",
            "SUPERNODE_RUNTIME__DRAIN_TIMEOUT_S": "20",
        }
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "supernode.frontend", env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, proc)
            body = {"model": "deepseek-r1", "prompt": "drain me", "max_tokens": NUM_TOKENS, "stream": True}
            events: list[str] = []
            async with httpx.AsyncClient(timeout=20) as http:
                async with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
                    assert resp.status_code == 200
                    async for line in resp.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if not events:
                            proc.send_signal(signal.SIGTERM)
                        events.append(line.removeprefix("data: "))
            assert events[-1] == "[DONE]"
            text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
            assert len(text) == NUM_TOKENS and router.num_cancelled == 0
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
