"""Scoring jobs in the prefill batcher: a second, lower-priority queue, and their vocabulary cost. Pure.

An XL3M scoring job is prefill of segment + question that keeps no KV and needs logits only at the
question positions: a request record with `num_question` > 0. `TieredPrefillScheduler` is the prefill
batcher with a background queue for them: with priority "low" a batch takes interactive prompts first
and fills what is left of the token budget with scoring jobs; with "normal" scoring jobs queue FIFO
with interactive prompts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from supernode.core.request import Request
from supernode.core.scheduler import (
    PrefillBatch,
    PrefillScheduler,
    PrefillSlice,
    QueueFullError,
    take_in_order,
)


class TieredPrefillScheduler(PrefillScheduler):
    """PrefillScheduler plus a bounded background queue for scoring jobs."""

    def __init__(self, token_budget: int, max_queue: int, max_background: int, priority: str = "low") -> None:
        super().__init__(token_budget, max_queue)
        if priority not in ("low", "normal"):
            raise ValueError("priority must be 'low' or 'normal'")
        self.priority = priority
        self.max_background = max_background
        self.background: deque[Request] = deque()

    def add_scoring(self, job: Request) -> None:
        assert job.num_question > 0 and job.num_prefill_remaining > 0
        if self.priority == "normal":
            self.add(job)
            return
        if len(self.background) >= self.max_background:
            raise QueueFullError(f"scoring queue holds {self.max_background} jobs")
        self.background.append(job)

    def cancel(self, request: Request) -> None:
        super().cancel(request)
        if request in self.background:
            self.background.remove(request)

    @property
    def num_background_tokens(self) -> int:
        return sum(job.num_prefill_remaining for job in self.background)

    def schedule(self) -> PrefillBatch | None:
        """Interactive prompts first; scoring jobs fill what is left of the budget."""
        slices: list[PrefillSlice] = []
        left = take_in_order(self.waiting, self.token_budget, slices)
        take_in_order(self.background, left, slices)
        return self._batch(slices)

    def postprocess(self, batch: PrefillBatch) -> list[Request]:
        background = [s for s in batch.slices if s.request in self.background]
        finished = super().postprocess(PrefillBatch(tuple(s for s in batch.slices if s not in background)))
        for s in background:
            job = s.request
            job.num_prefill_batches += 1
            if job.is_done:
                continue
            job.num_prefilled += s.num_new
            if job.num_prefill_remaining == 0:
                finished.append(job)
                self.background.remove(job)
        return finished


def lm_head_tokens(slices: Sequence[PrefillSlice]) -> list[int]:
    """Vocabulary projections per slice: for an interactive prompt one, on its last chunk only (its first
    output token; earlier chunks sample nothing), and for a scoring job its question positions that
    fall in this slice."""
    out = []
    for s in slices:
        request, hi = s.request, s.num_context + s.num_new
        if not request.num_question:
            out.append(int(s.num_new > 0 and hi >= len(request.prompt)))
            continue
        first_question = len(request.prompt) - request.num_question
        out.append(max(0, hi - max(s.num_context, first_question)))
    return out


def scoring_share(slices: Sequence[PrefillSlice]) -> float:
    """Share of the batch's new tokens that belong to scoring jobs (to apportion batch time)."""
    total = sum(s.num_new for s in slices)
    if total == 0:
        return 0.0
    return sum(s.num_new for s in slices if s.request.num_question) / total
