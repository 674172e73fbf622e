"""Decode placement of requests sent together, on the in-process cluster: the router counts the KV it
has just reserved, so a burst does not all land on the instance its last load report favoured."""

from __future__ import annotations

import asyncio

from supernode.core.request import Request, Sampling
from supernode.inproc import ClusterShape, InprocCluster, LocalDecodePeer
from supernode.runtime.clock import VirtualClock
from supernode.runtime.peers import Reservation
from tests.conftest import make_settings

SHAPE = ClusterShape(num_prefill=2, num_decode=2, prefill_npus=1, decode_dies=2, pool_bytes=10**12)
PROMPT = [300 + (i * 7) % 101 for i in range(400)]


async def _first_reports(cluster: InprocCluster) -> None:
    """Waits for the router's background poll to report every worker at start (the next is 1000 s
    away), so no report arrives while the test's requests run."""
    for _ in range(1000):  # a few turns of the loop: the poll task's first run
        if all(w.load.worker_id for w in cluster.router.workers.all):
            return
        await asyncio.sleep(0)
    raise AssertionError("the start-up poll did not report every worker")


async def _drain(cluster: InprocCluster, request: Request) -> None:
    async for _ in cluster.generate(request):
        pass


async def test_requests_sent_together_spread_over_decode_instances():
    # No load report arrives during the burst: placement rests on the router's own count.
    settings = make_settings(router={"load_poll_s": 1000.0})
    async with InprocCluster(settings, VirtualClock(start=1.0), SHAPE) as cluster:
        await _first_reports(cluster)
        requests = [cluster.router.make_request(f"r{i}", "", PROMPT, 4, Sampling(seed=i)) for i in range(6)]
        await asyncio.gather(*(_drain(cluster, r) for r in requests))
        pending = [w.kv_pending for w in cluster.router.workers.decode]
    placed = [r.decode_worker for r in requests]
    assert placed.count("decode-0") == placed.count("decode-1") == 3, placed
    assert sum(pending) == sum(len(PROMPT) + 4 for _ in requests)


async def test_a_load_report_replaces_the_pending_count():
    settings = make_settings(router={"load_poll_s": 1000.0})
    async with InprocCluster(settings, VirtualClock(start=1.0), SHAPE) as cluster:
        await _first_reports(cluster)
        await _drain(cluster, cluster.router.make_request("r", "", PROMPT, 4, Sampling(seed=1)))
        assert sum(w.kv_pending for w in cluster.router.workers.decode) > 0
        await cluster.router.workers.poll_once()
        assert [w.kv_pending for w in cluster.router.workers.decode] == [0, 0]


class SlowReserveDecode(LocalDecodePeer):
    """A live decode instance too busy to answer its first `num_slow` reserves within the call's bound."""

    def __init__(self, inner: LocalDecodePeer, num_slow: int, delay_s: float) -> None:
        super().__init__(inner.engine)
        self.num_slow = num_slow
        self.delay_s = delay_s
        self.num_reserves = 0

    async def reserve(self, request_id: str, num_prompt_tokens: int, max_tokens: int) -> Reservation:
        self.num_reserves += 1
        if self.num_reserves <= self.num_slow:
            await self.engine.clock.sleep(self.delay_s)
        return await super().reserve(request_id, num_prompt_tokens, max_tokens)


async def test_a_busy_decode_is_asked_again_not_marked_down():
    # One decode instance, too busy to answer two reserves within the 1 s bound: the request waits
    # and asks again (as for a full instance), and the instance keeps its streams and its health.
    shape = ClusterShape(num_prefill=1, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**12)
    settings = make_settings(router={"call_timeout_s": 1.0, "load_poll_s": 1000.0})
    async with InprocCluster(settings, VirtualClock(start=1.0), shape) as cluster:
        worker = cluster.router.workers.decode[0]
        slow = SlowReserveDecode(worker.peer, num_slow=2, delay_s=3.0)
        worker.peer = slow
        request = cluster.router.make_request("r", "", PROMPT, 4, Sampling(seed=3))
        await _drain(cluster, request)
        assert worker.is_healthy and worker.down_epoch == 0
    assert slow.num_reserves == 3
    assert request.finish_reason == "length" and request.num_generated == 4
