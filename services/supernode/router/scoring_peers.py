"""`SegmentScorer` over the prefill instances (`PrefillPeer.score`): least-loaded first, the next one on
UNAVAILABLE or RESOURCE_EXHAUSTED, backing off while every instance's scoring queue is full."""

from __future__ import annotations

from collections.abc import Sequence

from supernode.core import policy
from supernode.router.workers import WorkerSet
from supernode.runtime.clock import Clock
from supernode.runtime.errors import ResourceExhaustedError, SupernodeError, UnavailableError
from supernode.runtime.peers import ScoreResult


class PrefillPeers:
    def __init__(self, workers: WorkerSet, clock: Clock, max_wait_s: float) -> None:
        self.workers = workers
        self.clock = clock
        self.max_wait_s = max_wait_s  # emulated seconds to wait while every scoring queue is full

    async def score(
        self, job_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        deadline, backoff = self.clock.now() + self.max_wait_s, 0.02
        while True:
            try:
                return await self._once(job_id, segment, question, score_fn)
            except ResourceExhaustedError:
                if self.clock.now() + backoff > deadline:
                    raise
                await self.clock.sleep(backoff)
                backoff = min(0.5, backoff * 2)

    async def _once(
        self, job_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        workers = self.workers.prefill
        order = policy.prefill_order([w.snapshot() for w in workers], "paper")
        last: SupernodeError = UnavailableError("no prefill instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            worker.num_inflight += 1
            try:
                return await worker.peer.score(job_id, segment, question, score_fn)
            except (UnavailableError, ResourceExhaustedError) as err:
                worker.on_error(err)
                last = err
            finally:
                worker.num_inflight -= 1
        raise last
