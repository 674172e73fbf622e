"""Scoring jobs in the prefill batcher: a second, lower-priority queue, and their vocabulary cost. Pure.

An XL3M scoring job is prefill of segment + question that keeps no KV and needs logits only at the
question positions. `TieredPrefillScheduler` is the prefill batcher with a background queue for them:
with priority "low" a batch takes interactive prompts first and fills what is left of the token
budget with scoring jobs; with "normal" scoring jobs queue FIFO with interactive prompts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from supernode.core.scheduler import PrefillBatch, PrefillJob, PrefillScheduler, PrefillSlice, QueueFullError


@dataclass(slots=True, eq=False)
class ScoringJob(PrefillJob):
    num_question: int = 1  # trailing positions projected onto the vocabulary (tokens)


class TieredPrefillScheduler(PrefillScheduler):
    """PrefillScheduler plus a bounded background queue for scoring jobs."""

    def __init__(self, token_budget: int, max_queue: int, max_background: int, priority: str = "low") -> None:
        super().__init__(token_budget, max_queue)
        if priority not in ("low", "normal"):
            raise ValueError("priority must be 'low' or 'normal'")
        self.priority = priority
        self.max_background = max_background
        self.background: deque[PrefillJob] = deque()

    def add_scoring(self, job: ScoringJob) -> None:
        if self.priority == "normal":
            self.add(job)
            return
        if len(self.background) >= self.max_background:
            raise QueueFullError(f"scoring queue holds {self.max_background} jobs")
        assert job.num_remaining > 0
        self.background.append(job)

    def remove(self, job: PrefillJob) -> None:
        super().remove(job)
        if job in self.background:
            self.background.remove(job)

    @property
    def num_background_tokens(self) -> int:
        return sum(job.num_remaining for job in self.background)

    def schedule(self) -> PrefillBatch | None:
        batch = super().schedule()
        used = batch.num_new_tokens if batch else 0
        budget = self.token_budget - used
        slices = list(batch.slices) if batch else []
        for job in self.background:
            if budget == 0:
                break
            take = min(job.num_remaining, budget)
            slices.append(PrefillSlice(job, take, job.num_cached + job.num_done))
            budget -= take
        if not slices:
            return None
        self.num_running = len(slices)
        return PrefillBatch(tuple(slices))


def lm_head_tokens(slices: Sequence[PrefillSlice]) -> list[int]:
    """Vocabulary projections per slice: for an interactive prompt one, on its last chunk only (its first
    output token; earlier chunks sample nothing), and for a scoring job its question positions that
    fall in this slice."""
    out = []
    for s in slices:
        job = s.job
        if not isinstance(job, ScoringJob):
            out.append(int(s.num_new > 0 and s.num_context + s.num_new >= job.num_tokens))
            continue
        first_question = job.num_tokens - job.num_question
        lo, hi = s.num_context, s.num_context + s.num_new
        out.append(max(0, hi - max(lo, first_question)))
    return out


def scoring_share(slices: Sequence[PrefillSlice]) -> float:
    """Share of the batch's new tokens that belong to scoring jobs (to apportion batch time)."""
    total = sum(s.num_new for s in slices)
    if total == 0:
        return 0.0
    return sum(s.num_new for s in slices if isinstance(s.job, ScoringJob)) / total
