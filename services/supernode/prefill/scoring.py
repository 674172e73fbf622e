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
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from supernode.core import predictive, tokens
from supernode.core.request import Request, RequestStatus, Sampling
from supernode.core.scheduler import PrefillBatch, PrefillScheduler, QueueFullError
from supernode.core.scoring_jobs import TieredPrefillScheduler, lm_head_tokens, scoring_share
from supernode.hw import cost as hw_cost
from supernode.hw.specs import PrefillDeployment
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.engine import StepLoop
from supernode.runtime.errors import ResourceExhaustedError, invalid
from supernode.runtime.peers import ScoreResult
from supernode.runtime.supervision import Supervisor


class PrefillHost(Protocol):
    """What the scoring jobs use of the prefill engine that hosts them."""

    clock: Clock
    scheduler: PrefillScheduler
    loop: StepLoop[PrefillBatch]
    supervisor: Supervisor


class DoneSink:
    """The sink a waiting caller listens on: resolved when its prompt (or scoring job) is computed."""

    def __init__(self, on_due: Callable[[float], None] | None = None) -> None:
        """`on_due(end_s)`: told when the batch that completes the prompt is planned, with the
        emulated instant it ends (the first token is offered then, due at that instant)."""
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_due = on_due

    def on_tokens(self, request: Request, token_ids: list[int], num_tokens: int) -> None:
        return None

    def on_done(self, request: Request) -> None:
        if not self.future.done():
            self.future.set_result(None)


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
        # This worker's child of each, bound once: `labels()` costs more than the increment, and
        # `on_batch` runs every prefill step.
        self.jobs_child = self.jobs.labels(worker_id)
        self._tokens = self.tokens.labels(worker_id)
        self._seconds = self.seconds.labels(worker_id)
        self._batch_seconds = self.batch_seconds.labels(worker_id)

    def on_batch(self, batch: PrefillBatch, cost: hw_cost.Cost) -> None:
        batch_s = cost.total_us / 1e6
        self._batch_seconds.inc(batch_s)
        share = scoring_share(batch.slices)
        if share:
            self._seconds.inc(batch_s * share)
            num = sum(s.num_new for s in batch.slices if s.request.num_question)
            self._tokens.inc(num)


class Scorer:
    """Runs scoring jobs through the host's batcher and step loop."""

    def __init__(self, host: PrefillHost, registry: CollectorRegistry, worker_id: str) -> None:
        self.host = host
        self.metrics = ScoringMetrics(registry, worker_id)
        self._share_s: dict[int, float] = {}  # id(job) -> batch time apportioned by its token share

    def on_batch(self, batch: PrefillBatch, cost: hw_cost.Cost) -> None:
        """Called by the host for every batch: metrics, and each scoring job's share of the time."""
        self.metrics.on_batch(batch, cost)
        total = batch.num_new_tokens
        for s in batch.slices:
            if s.request.num_question and total:
                key = id(s.request)
                self._share_s[key] = self._share_s.get(key, 0.0) + cost.total_us / 1e6 * s.num_new / total

    async def score(
        self, request_id: str, segment: list[int], question: list[int], score_fn: str
    ) -> ScoreResult:
        segment, question, score_fn = validate(request_id, segment, question, score_fn)
        host = self.host
        scheduler = host.scheduler
        assert isinstance(scheduler, TieredPrefillScheduler), "the prefill batcher must take scoring jobs"
        job = Request(request_id, segment + question, 1, Sampling(), arrival_s=host.clock.now())
        job.num_question = len(question)
        done = DoneSink()
        job.sink = done
        host.supervisor.check()
        try:
            scheduler.add_scoring(job)
        except QueueFullError as err:
            raise ResourceExhaustedError(f"prefill scoring queue full: {err}", retry_after_s=0.5) from err
        host.loop.wake()
        # The score is what the model concludes from the logits the batch computes; it is worked out
        # off the event loop while the job waits for its batch.
        scoring = asyncio.ensure_future(
            asyncio.to_thread(predictive.score_segment, segment, question, score_fn)
        )
        try:
            await done.future
            if job.status is RequestStatus.FAILED:
                raise host.supervisor.error()
            value = await scoring
        finally:
            scoring.cancel()
            if not job.is_done:
                scheduler.cancel(job)
            share_s = self._share_s.pop(id(job), 0.0)
        self.metrics.jobs_child.inc()
        queue_s = max(0.0, job.finished_s - job.arrival_s - job.prefill_compute_s)
        return ScoreResult(value, share_s, queue_s)


def validate(
    request_id: str, segment: list[int], question: list[int], score_fn: str
) -> tuple[list[int], list[int], str]:
    if not request_id:
        raise invalid("request_id", "must not be empty")
    if not segment:
        raise invalid("segment_ids", "must hold at least one token")
    if not question:
        raise invalid("question_ids", "must hold at least one token")
    bad = tokens.first_invalid_token(segment + question)
    if bad is not None:
        raise invalid("segment_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
    score_fn = score_fn or "mean_entropy"
    if score_fn not in predictive.SCORE_FNS:
        raise invalid("score_fn", f"must be one of {', '.join(sorted(predictive.SCORE_FNS))}")
    return segment, question, score_fn
