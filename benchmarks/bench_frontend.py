"""Frontend overhead: wall latency a request gains by going through the HTTP frontend instead of the SDK.

Setup: the fake router (`supernode.frontend.fake_router`, real gRPC, no emulated delays) and the frontend
(`python -m supernode.frontend`) each run as their own process on 127.0.0.1. From this process, one
request at a time, alternately: (A) `AsyncClient.complete` straight to the router, (B) `POST
/v1/completions` (non-streaming, keep-alive httpx) to the frontend, which makes the same SDK call.
Each request: 64-byte prompt, 16 tokens, one token per gRPC chunk. Overhead = B - A at the same percentile.

Relay: then 256 streaming `POST /v1/completions` of 128 tokens each, 32 at a time (the lean client of
benchmarks/lean_http.py), against the same two processes: `frontend_relay_events_per_s` is the SSE
events the client read per wall second, `frontend_relay_cpu_us_per_token` the frontend process's CPU
(user + system, from /proc) per token relayed. On 2 cores the frontend is the busiest of the three
processes, so these say how many tokens per second one frontend process can relay.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from benchmarks.lean_http import post_sse
from supernode.processes import cpu_s, free_port
from supernode.sdk import AsyncClient

NUM_WARMUP = 100
NUM_REQUESTS = 1000
MAX_TOKENS = 16
PROMPT = "x" * 64
RELAY_STREAMS = 256
RELAY_CONCURRENCY = 32
RELAY_TOKENS = 128


@contextmanager
def _process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError("frontend did not start")


async def _measure(router: str, url: str) -> tuple[list[float], list[float]]:
    direct: list[float] = []
    through: list[float] = []
    body = {"model": "deepseek-r1", "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    sdk = AsyncClient(router, timeout_s=30.0)
    async with sdk, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(50):  # the router may still be binding
            try:
                await sdk.complete(PROMPT, max_tokens=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        for i in range(NUM_WARMUP + NUM_REQUESTS):
            start = time.perf_counter()
            await sdk.complete(PROMPT, max_tokens=MAX_TOKENS)
            middle = time.perf_counter()
            resp = await http.post("/v1/completions", json=body)
            end = time.perf_counter()
            resp.raise_for_status()
            if i >= NUM_WARMUP:
                direct.append(middle - start)
                through.append(end - middle)
    return direct, through


async def _relay(port: int, frontend_pid: int) -> dict[str, float]:
    """Streams through the frontend, `RELAY_CONCURRENCY` at a time; events per s, frontend CPU per token."""
    gate = asyncio.Semaphore(RELAY_CONCURRENCY)
    events = [0]

    def on_data(data: str) -> bool:
        if data == "[DONE]":
            return True
        events[0] += 1
        return False

    async def one(i: int) -> None:
        body = {"model": "deepseek-r1", "prompt": f"{PROMPT} {i}", "max_tokens": RELAY_TOKENS,
                "stream": True, "ignore_eos": True}  # fmt: skip
        async with gate:
            status = await post_sse("127.0.0.1", port, "/v1/completions", body, on_data)
        if status != 200:
            raise RuntimeError(f"relay stream {i}: HTTP {status}")

    await asyncio.gather(*(one(i) for i in range(RELAY_CONCURRENCY)))  # warm-up
    events[0] = 0
    cpu, start = cpu_s(frontend_pid), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(RELAY_STREAMS)))
    wall, cpu = time.perf_counter() - start, cpu_s(frontend_pid) - cpu
    if events[0] != RELAY_STREAMS * RELAY_TOKENS:
        raise RuntimeError(f"relay: {events[0]} events, expected {RELAY_STREAMS * RELAY_TOKENS}")
    return {
        "frontend_relay_events_per_s": events[0] / wall,
        "frontend_relay_cpu_us_per_token": 1e6 * cpu / events[0],
    }


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def run() -> dict[str, float]:
    router_port, http_port = free_port(), free_port()
    router = f"127.0.0.1:{router_port}"
    env = os.environ | {
        "SUPERNODE_ROUTER__ADDRESS": router,
        "SUPERNODE_FRONTEND__PORT": str(http_port),
        "SUPERNODE_RUNTIME__BIND_HOST": "127.0.0.1",
        "SUPERNODE_RUNTIME__LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{http_port}"
    with _process("-m", "supernode.frontend.fake_router", str(router_port)), _process(
        "-m", "supernode.frontend", env=env
    ) as frontend:  # fmt: skip
        asyncio.run(_wait_http(url))
        direct, through = asyncio.run(_measure(router, url))
        relay = asyncio.run(_relay(http_port, frontend.pid))
    return {
        "frontend_overhead_ms_p50": (statistics.median(through) - statistics.median(direct)) * 1e3,
        "frontend_overhead_ms_p99": (_p99(through) - _p99(direct)) * 1e3,
    } | relay


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name} = {value:.3f}")
