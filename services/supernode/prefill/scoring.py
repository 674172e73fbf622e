"""XL3M scoring jobs on a prefill instance: the `Score` RPC's work, its pricing and its metrics.

A scoring job's states:
1. validated (segment and question non-empty, in the vocabulary, score function known);
2. queued in the prefill batcher's scoring queue (bounded; lower priority than interactive prompts
   unless `xl3m.scoring_priority` is normal);
3. computed in one or more batches, priced as prefill of segment + question with the vocabulary
   projection only at the question positions; no context-cache lookup, no KV stored or kept;
4. scored from the token model's predictive distribution (off the event loop) and answered.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from supernode.core import predictive, tokens
from supernode.core.scheduler import PrefillBatch, PrefillScheduler, QueueFullError
from supernode.core.scoring_jobs import ScoringJob, TieredPrefillScheduler, lm_head_tokens, scoring_share
from supernode.hw import cost as hw_cost
from supernode.hw.specs import PrefillDeployment
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.engine import StepLoop
from supernode.runtime.errors import ResourceExhaustedError, invalid
from supernode.v1 import prefill_pb2


class PrefillHost(Protocol):
    """What the scoring jobs use of the prefill worker that hosts them."""

    clock: Clock
    scheduler: PrefillScheduler
    loop: StepLoop[PrefillBatch]
    _done: dict[str, asyncio.Future[float]]
    _compute_s: dict[str, float]


def make_scheduler(settings: Settings) -> TieredPrefillScheduler:
    """The prefill batcher with a scoring queue as long as the interactive one."""
    cfg = settings.prefill
    return TieredPrefillScheduler(
        cfg.tokens_per_npu * cfg.num_npus, cfg.max_queue, cfg.max_queue, settings.xl3m.scoring_priority
    )


def price(dep: PrefillDeployment, batch: PrefillBatch) -> hw_cost.Cost:
    """The batch's cost with the vocabulary projection at each scoring job's question positions."""
    return hw_cost.prefill_batch_cost(
        dep,
        [s.num_new for s in batch.slices],
        [s.num_context for s in batch.slices],
        lm_head_tokens=lm_head_tokens(batch.slices),
    )


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry, worker_id: str) -> None:
        labels = ("worker",)
        self.worker = worker_id
        self.jobs = Counter(
            "supernode_prefill_scoring_jobs", "XL3M scoring jobs computed", labels, registry=registry
        )
        self.tokens = Counter(
            "supernode_prefill_scoring_tokens", "Tokens computed by scoring jobs", labels, registry=registry
        )
        self.seconds = Counter(
            "supernode_prefill_scoring_seconds",
            "Emulated batch time apportioned to scoring jobs by their share of the batch's tokens",
            labels,
            registry=registry,
        )
        self.batch_seconds = Counter(
            "supernode_prefill_batch_seconds",
            "Emulated batch time of every prefill batch (scoring share = scoring_seconds / this)",
            labels,
            registry=registry,
        )
        for m in (self.jobs, self.tokens, self.seconds, self.batch_seconds):
            m.labels(worker_id)

    def on_batch(self, batch: PrefillBatch, cost: hw_cost.Cost) -> None:
        batch_s = cost.total_us / 1e6
        self.batch_seconds.labels(self.worker).inc(batch_s)
        share = scoring_share(batch.slices)
        if share:
            self.seconds.labels(self.worker).inc(batch_s * share)
            num = sum(s.num_new for s in batch.slices if isinstance(s.job, ScoringJob))
            self.tokens.labels(self.worker).inc(num)


class Scorer:
    """Runs Score requests through the host's batcher and step loop."""

    def __init__(self, host: PrefillHost, registry: CollectorRegistry, worker_id: str) -> None:
        self.host = host
        self.metrics = ScoringMetrics(registry, worker_id)
        self._share_s: dict[str, float] = {}  # job -> batch time apportioned by its share of the tokens

    def on_batch(self, batch: PrefillBatch, cost: hw_cost.Cost) -> None:
        """Called by the host for every batch: metrics, and each scoring job's share of the time."""
        self.metrics.on_batch(batch, cost)
        total = batch.num_new_tokens
        for s in batch.slices:
            if isinstance(s.job, ScoringJob) and total:
                rid = s.job.request_id
                self._share_s[rid] = self._share_s.get(rid, 0.0) + cost.total_us / 1e6 * s.num_new / total

    async def score(self, request: prefill_pb2.ScoreRequest) -> prefill_pb2.ScoreResponse:
        segment, question, score_fn = _validate(request)
        host = self.host
        scheduler = host.scheduler
        assert isinstance(scheduler, TieredPrefillScheduler), "the prefill batcher must take scoring jobs"
        job = ScoringJob(request.request_id, len(segment) + len(question), 0, num_question=len(question))
        queued_at = host.clock.now()
        done = asyncio.get_running_loop().create_future()
        try:
            scheduler.add_scoring(job)
        except QueueFullError as err:
            raise ResourceExhaustedError(f"prefill scoring queue full: {err}", retry_after_s=0.5) from err
        host._done[request.request_id] = done
        host.loop.wake()
        # The score is what the model concludes from the logits the batch computes; the host works
        # it out off the event loop while the job waits for its batch.
        scoring = asyncio.ensure_future(
            asyncio.to_thread(predictive.score_segment, segment, question, score_fn)
        )
        try:
            finished_at = await done
            value = await scoring
        finally:
            scoring.cancel()
            scheduler.remove(job)
            host._done.pop(request.request_id, None)
            compute_s = host._compute_s.pop(request.request_id, 0.0)
            share_s = self._share_s.pop(request.request_id, 0.0)
        self.metrics.jobs.labels(self.metrics.worker).inc()
        return prefill_pb2.ScoreResponse(
            score=value, queue_s=max(0.0, finished_at - queued_at - compute_s), compute_s=share_s
        )


def _validate(request: prefill_pb2.ScoreRequest) -> tuple[list[int], list[int], str]:
    if not request.request_id:
        raise invalid("request_id", "must not be empty")
    segment, question = list(request.segment_ids), list(request.question_ids)
    if not segment:
        raise invalid("segment_ids", "must hold at least one token")
    if not question:
        raise invalid("question_ids", "must hold at least one token")
    bad = next((t for t in segment + question if not tokens.is_valid_token(t)), None)
    if bad is not None:
        raise invalid("segment_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
    score_fn = request.score_fn or "mean_entropy"
    if score_fn not in predictive.SCORE_FNS:
        raise invalid("score_fn", f"must be one of {', '.join(sorted(predictive.SCORE_FNS))}")
    return segment, question, score_fn
