"""Frontend overhead: wall latency a request gains by going through the HTTP frontend instead of the SDK.

Setup: the fake router (`supernode.frontend.fake_router`, real gRPC, no emulated delays) and the frontend
(`python -m supernode.frontend`) each run as their own process on 127.0.0.1. From this process, one
request at a time, alternately: (A) `AsyncClient.complete` straight to the router, (B) `POST
/v1/completions` (non-streaming, keep-alive httpx) to the frontend, which makes the same SDK call.
Each request: 64-byte prompt, 16 tokens, one token per gRPC chunk. Overhead = B - A at the same percentile.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from supernode.sdk import AsyncClient

NUM_WARMUP = 100
NUM_REQUESTS = 1000
MAX_TOKENS = 16
PROMPT = "x" * 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(*args: str, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL)
    try:
        yield
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


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def run() -> dict[str, float]:
    router_port, http_port = _free_port(), _free_port()
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
    ):  # fmt: skip
        asyncio.run(_wait_http(url))
        direct, through = asyncio.run(_measure(router, url))
    return {
        "frontend_overhead_ms_p50": (statistics.median(through) - statistics.median(direct)) * 1e3,
        "frontend_overhead_ms_p99": (_p99(through) - _p99(direct)) * 1e3,
    }


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name} = {value:.3f}")
