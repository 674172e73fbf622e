"""Concurrent HTTP streams spread over shards of httpx clients (loadgen/http_clients.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from supernode.loadgen.http_clients import HttpClients


async def test_streams_beyond_a_shards_share_open_another_shard_and_come_back_to_the_least_loaded() -> None:
    release, all_in = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) == 5:
            all_in.set()
        await release.wait()
        return httpx.Response(200, text="ok")

    async with HttpClients(per_client=2, transport=httpx.MockTransport(handler), base_url="http://x") as http:

        async def get(path: str) -> str:
            async with http.stream("GET", path) as resp:
                return (await resp.aread()).decode()

        held = [asyncio.create_task(get(f"/{k}")) for k in range(5)]
        await asyncio.wait_for(all_in.wait(), 5)
        assert http.num_clients == 3  # 2 + 2 + 1 in flight
        release.set()
        assert await asyncio.gather(*held) == ["ok"] * 5
        assert (await http.post("/after")).text == "ok"
        assert http.num_clients == 3  # a free shard took it
    assert http.num_clients == 0  # closed on exit


def test_a_shard_holds_at_least_one_stream() -> None:
    with pytest.raises(ValueError, match="per_client"):
        HttpClients(per_client=0)
