"""Decode placement of requests sent together, on the in-process cluster: the router counts the KV it
has just reserved, so a burst does not all land on the instance its last load report favoured."""

from __future__ import annotations

import asyncio

from supernode.core.request import Request, Sampling
from supernode.inproc import ClusterShape, InprocCluster
from supernode.runtime.clock import VirtualClock
from tests.conftest import make_settings

SHAPE = ClusterShape(num_prefill=2, num_decode=2, prefill_npus=1, decode_dies=2, pool_bytes=10**12)
PROMPT = [300 + (i * 7) % 101 for i in range(400)]


async def _drain(cluster: InprocCluster, request: Request) -> None:
    async for _ in cluster.generate(request):
        pass


async def test_requests_sent_together_spread_over_decode_instances():
    # No load report arrives during the burst: placement rests on the router's own count.
    settings = make_settings(router={"load_poll_s": 1000.0})
    async with InprocCluster(settings, VirtualClock(start=1.0), SHAPE) as cluster:
        await cluster.router.workers.poll_once()
        requests = [cluster.router.make_request(f"r{i}", "", PROMPT, 4, Sampling(seed=i)) for i in range(6)]
        await asyncio.gather(*(_drain(cluster, r) for r in requests))
        pending = [w.kv_pending for w in cluster.router.workers.decode]
    placed = [r.decode_worker for r in requests]
    assert placed.count("decode-0") == placed.count("decode-1") == 3, placed
    assert sum(pending) == sum(len(PROMPT) + 4 for _ in requests)


async def test_a_load_report_replaces_the_pending_count():
    settings = make_settings(router={"load_poll_s": 1000.0})
    async with InprocCluster(settings, VirtualClock(start=1.0), SHAPE) as cluster:
        await cluster.router.workers.poll_once()
        await _drain(cluster, cluster.router.make_request("r", "", PROMPT, 4, Sampling(seed=1)))
        assert sum(w.kv_pending for w in cluster.router.workers.decode) > 0
        await cluster.router.workers.poll_once()
        assert [w.kv_pending for w in cluster.router.workers.decode] == [0, 0]
