"""`SegmentScorer` over the prefill workers' `Score` RPC: least-loaded first, the next one on
UNAVAILABLE or RESOURCE_EXHAUSTED, backing off while every worker's scoring queue is full."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from supernode.core import policy
from supernode.router.long_context import ScoreResult
from supernode.router.workers import WorkerSet
from supernode.runtime.errors import ResourceExhaustedError, SupernodeError, UnavailableError, from_rpc_error
from supernode.v1 import prefill_pb2


class PrefillPeers:
    def __init__(self, workers: WorkerSet, rpc_timeout_s: float, max_wait_s: float) -> None:
        self.workers = workers
        self.rpc_timeout_s = rpc_timeout_s
        self.max_wait_s = max_wait_s

    async def score(
        self, job_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        request = prefill_pb2.ScoreRequest(
            request_id=job_id, segment_ids=segment, question_ids=question, score_fn=score_fn
        )
        loop = asyncio.get_running_loop()
        deadline, backoff = loop.time() + self.max_wait_s, 0.02
        while True:
            try:
                return await self._once(request)
            except ResourceExhaustedError:
                if loop.time() + backoff > deadline:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(0.5, backoff * 2)

    async def _once(self, request: prefill_pb2.ScoreRequest) -> ScoreResult:
        workers = self.workers.prefill
        order = policy.prefill_order([w.snapshot() for w in workers], "paper")
        last: SupernodeError = UnavailableError("no prefill instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            worker.num_inflight += 1
            try:
                # A scoring job waits behind interactive prefill: no deadline beyond the request's own.
                reply = await worker.stub.Score(request, timeout=None)  # type: ignore[attr-defined]
                return ScoreResult(reply.score, reply.compute_s, reply.queue_s)
            except grpc.RpcError as err:
                domain = from_rpc_error(err)
                if isinstance(domain, UnavailableError) and not domain.from_service:
                    worker.is_healthy = False
                if not isinstance(domain, UnavailableError | ResourceExhaustedError):
                    raise domain from err
                last = domain
            finally:
                worker.num_inflight -= 1
        raise last
