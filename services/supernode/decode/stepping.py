"""Pricing decode steps of counting-only sequences from per-rank loads, and running several at once.

When every running sequence only counts its tokens (`supernode sim` without `--tokens`), each rank's
load is kept in `core.rank_loads`, so a step is priced from the busiest rank alone (the same cost-model
call, with the same arguments, as pricing it from every sequence). Between two changes of the batch (a
sequence joins, finishes or leaves) the steps differ only by their context growth, so the engine can run
them as one multi-step batch: the first and the last step are priced exactly and the ones in between
are taken on the straight line between them (attention time is linear in the context; the error is the
curvature of the step time over the run, bounded by a test against pricing every step). A request that
arrives meanwhile cuts the run at the end of the step it arrived in, where it would have joined.
"""

from __future__ import annotations

from dataclasses import dataclass

from supernode.core.scheduler import DecodeBatch, DecodeScheduler
from supernode.hw import cost as hw_cost
from supernode.hw.decode import decode_step_ranks_cost
from supernode.hw.specs import DecodeDeployment
from supernode.hw.stages import attn_total_us

MAX_STEPS_PER_BATCH = 256  # longest run of steps priced as one batch


def step_cost_from_loads(
    dep: DecodeDeployment, scheduler: DecodeScheduler, batch: DecodeBatch, ahead: int = 0
) -> hw_cost.Cost:
    """The cost of step `batch.step + ahead` of a counting-only batch: `decode_step_cost_ranks` on the
    busiest rank by attention work, without listing every rank's context lengths."""
    loads = scheduler.loads
    rank = loads.busiest(ahead, lambda n, k: attn_total_us(dep, n, float(k), 1.0))
    if rank < 0:
        return hw_cost.Cost(0.0, {}, {})
    mean_seqs = loads.num_seqs_total / len(loads.num_seqs)
    return decode_step_ranks_cost(dep, batch.kv_lens(batch.ranks[rank], ahead), mean_seqs)


@dataclass(frozen=True, slots=True)
class StepRun:
    """A multi-step batch's first and last step times (us): steps in between lie on the line."""

    first_us: float
    last_us: float
    num_steps: int

    def end_us(self, steps: int) -> float:
        """Time from the run's start to the end of its step `steps` (1-based)."""
        if self.num_steps == 1:
            return steps * self.first_us
        slope = (self.last_us - self.first_us) / (self.num_steps - 1)
        return steps * self.first_us + slope * steps * (steps - 1) / 2

    def steps_by(self, elapsed_us: float) -> int:
        """The step running at `elapsed_us` after the start (the first whose end is not before it)."""
        lo, hi = 1, self.num_steps
        while lo < hi:
            mid = (lo + hi) // 2
            if self.end_us(mid) >= elapsed_us:
                hi = mid
            else:
                lo = mid + 1
        return lo


class MultiStepPricer:
    """Prices a decode engine's batches: one step exactly, several on the line between their ends."""

    def __init__(self, dep: DecodeDeployment, scheduler: DecodeScheduler) -> None:
        self.dep = dep
        self.scheduler = scheduler
        self._run: tuple[DecodeBatch, StepRun, hw_cost.Cost] | None = None

    def price(self, batch: DecodeBatch) -> hw_cost.Cost:
        first = step_cost_from_loads(self.dep, self.scheduler, batch)
        if batch.num_steps == 1:
            return first
        last = step_cost_from_loads(self.dep, self.scheduler, batch, batch.num_steps - 1)
        run = StepRun(first.total_us, last.total_us, batch.num_steps)
        mean = hw_cost.Cost(
            (first.total_us + last.total_us) / 2,
            _mean(first.breakdown_us, last.breakdown_us),
            _mean(first.busy_us, last.busy_us),
            first.mode,
            first.aic_split,
        )
        cost = _scaled(mean, run.end_us(batch.num_steps))
        self._run = (batch, run, mean)
        return cost

    def split(
        self, batch: DecodeBatch, cost: hw_cost.Cost, elapsed_s: float
    ) -> tuple[DecodeBatch, hw_cost.Cost]:
        """The part of a multi-step `batch` that ends with the step running `elapsed_s` after its start."""
        if self._run is None or self._run[0] is not batch:
            return batch, cost
        _, run, mean = self._run
        steps = run.steps_by(elapsed_s * 1e6)
        if steps >= batch.num_steps:
            return batch, cost
        return batch.with_steps(steps), _scaled(mean, run.end_us(steps))


def _mean(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    if a.keys() == b.keys():  # the usual case: both steps ran the same parts
        return {k: (v + b[k]) / 2 for k, v in a.items()}
    return {k: (a.get(k, 0.0) + b.get(k, 0.0)) / 2 for k in a.keys() | b.keys()}


def _scaled(mean: hw_cost.Cost, total_us: float) -> hw_cost.Cost:
    """`mean`'s parts scaled to sum to `total_us`."""
    f = total_us / mean.total_us if mean.total_us > 0 else 0.0
    return hw_cost.Cost(
        total_us,
        {k: v * f for k, v in mean.breakdown_us.items()},
        {k: v * f for k, v in mean.busy_us.items()},
        mean.mode,
        mean.aic_split,
    )
