"""The one step loop: schedule -> price -> clock.sleep -> postprocess -> publish.

Workers give it three plain functions; it owns the waiting. Pricing runs inline (the cost model is
fast); the loop yields to the event loop on every step, so RPC handlers keep running. A worker that
runs several steps as one batch (decode's counting-only runs) also gives `split`: new work arriving
while such a batch runs cuts it at the end of the step then running, where the work would have joined.

The loop is supervised and fail-stop: if `schedule`, `price`, `on_planned`, the wait or
`postprocess` raises, the loop stops, records a `StepFailure` (the stage and the error), logs it with
its traceback and calls `on_failure`, which fails the worker's requests and takes the service out of
rotation (the scheduler's state can no longer be trusted, so it does not run another step).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from supernode.hw.cost import Cost
from supernode.runtime.clock import Clock, call_at

log = logging.getLogger(__name__)
B = TypeVar("B")
HOST_DELAY_FLOOR_S = 1e-6  # emulated: a shorter delay before an idle step is not the host's work


@dataclass(frozen=True, slots=True)
class StepFailure:
    """Why a step loop stopped."""

    stage: str  # schedule | price | plan | wait | postprocess
    error: str  # the exception's class and message (for logs and operators, never for clients)


@dataclass(slots=True)
class StepStats:
    num_steps: int = 0
    busy_s: float = 0.0  # emulated seconds spent in steps
    last_step_s: float = 0.0
    lag_s: float = 0.0  # how far the loop is behind its emulated plan now (host slower than emulation)
    max_lag_s: float = 0.0  # the worst lag seen
    last_cost: Cost | None = None
    ended_lag_s: float = 0.0  # lag at the end of every finished busy spell, summed (emulated s)

    @property
    def lag_total_s(self) -> float:
        """Emulated seconds the step loop has run behind its plan in all (the host too slow), the
        current busy spell included; over a window, divided by `busy_s`, the loop's lag ratio."""
        return self.ended_lag_s + self.lag_s


class StepLoop(Generic[B]):
    def __init__(
        self,
        name: str,
        clock: Clock,
        schedule: Callable[[], B | None],
        price: Callable[[B], Cost],
        postprocess: Callable[[B, Cost], None],
        split: Callable[[B, Cost, float], tuple[B, Cost]] | None = None,
        on_failure: Callable[[StepFailure], None] | None = None,
        ready_at: Callable[[B], float] | None = None,
        on_planned: Callable[[B, float], None] | None = None,
    ) -> None:
        """`split(batch, cost, elapsed_s)`: the part of `batch` that ends with the step running
        `elapsed_s` after its start, and its cost (None: batches are never cut). `ready_at(batch)`:
        the emulated instant the batch's work was ready, were the host's own work on its way there
        (RPCs, Redis, hashing) instant; a step after an idle spell starts then rather than now, by
        at most its own length (None: now). `on_planned(batch, end)`: told, before the wait, the emulated
        instant a batch that is never cut will end (prefill offers its first tokens due then)."""
        self.name = name
        self.clock = clock
        self._schedule = schedule
        self._price = price
        self._postprocess = postprocess
        self._split = split
        self._cut: asyncio.Future[None] | None = None  # set while a batch that may be cut runs
        self._on_failure = on_failure
        self._ready_at = ready_at
        self._on_planned = on_planned
        self.failure: StepFailure | None = None  # set once the loop has stopped on an error
        self._wake = asyncio.Event()
        self.stats = StepStats()
        self._task: asyncio.Task[None] | None = None
        self._prev_end = 0.0
        self._is_busy = False

    def wake(self) -> None:
        """Tells the loop there may be new work."""
        self._wake.set()
        if self._cut is not None and not self._cut.done():
            self._cut.set_result(None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-steps")

    async def stop(self) -> None:
        """Cancels the loop (a batch in progress is dropped, not postprocessed); `start` runs it again,
        its first step starting then rather than where the dropped one was due to end."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._is_busy = False

    async def _run(self) -> None:
        stage = "schedule"
        try:
            while True:
                stage = "schedule"
                batch = self._schedule()
                if batch is None:
                    if self._is_busy:  # a busy spell ends: its lag is settled, the next starts on time
                        self.stats.ended_lag_s += self.stats.lag_s
                        self.stats.lag_s = 0.0
                    self._is_busy = False
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                stage = "price"
                cost = self._price(batch)
                duration = cost.total_us / 1e6
                # Back-to-back steps start where the previous one was due to end, so the host's own
                # work between steps (postprocess, RPCs, wake-up jitter) does not stretch emulated step
                # times; after an idle spell the next step starts now, or when its work was ready.
                stage = "wait"
                start = self._prev_end if self._is_busy else self._idle_start(batch, duration)
                end = start + duration
                num_steps = getattr(batch, "num_steps", 1)  # a batch may run several steps (see split)
                if self._split is None or num_steps == 1:
                    if self._on_planned is not None:
                        stage = "plan"
                        self._on_planned(batch, end)
                        stage = "wait"
                    await self.clock.sleep_until(end)
                else:
                    batch, cost = await self._run_cuttable(batch, cost, start, end)
                    duration = cost.total_us / 1e6
                    end = start + duration
                    num_steps = getattr(batch, "num_steps", 1)
                self._prev_end, self._is_busy = end, True
                lag = self.clock.now() - end
                stage = "postprocess"
                self._postprocess(batch, cost)
                self._record(duration, max(0.0, lag), cost, num_steps)
        except Exception as exc:  # noqa: BLE001 - every failure stops the loop and is reported
            self._fail(stage, exc)

    def _idle_start(self, batch: B, duration: float) -> float:
        """When a step after an idle spell starts: when its work was ready (`ready_at`) if the host's
        work on its way made that earlier than now, but not before the previous step's end nor more
        than the step's own length ago (so it never ends in the past: the host's delay is absorbed
        into the step, not reported as lag). Under a microsecond counts as no delay."""
        now = self.clock.now()
        if self._ready_at is None:
            return now
        ready = self._ready_at(batch)
        if ready >= now - HOST_DELAY_FLOOR_S:
            return now
        return max(self._prev_end, now - duration, ready)

    def _fail(self, stage: str, exc: Exception) -> None:
        self.failure = StepFailure(stage, f"{type(exc).__name__}: {exc}")
        self._is_busy = False
        log.error("%s: step loop stopped: %s raised", self.name, stage, exc_info=exc)
        if self._on_failure is not None:
            try:
                self._on_failure(self.failure)
            except Exception:  # noqa: BLE001 - the handler's own bug must not hide the first one
                log.exception("%s: step-failure handler failed", self.name)

    async def _run_cuttable(self, batch: B, cost: Cost, start: float, end: float) -> tuple[B, Cost]:
        """Waits for `batch` to end, or for a wake-up; then cuts it at the step running then."""
        assert self._split is not None
        self._wake.clear()
        cut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._cut = cut
        timer = call_at(self.clock, end, lambda: None if cut.done() else cut.set_result(None))
        try:
            await cut
        finally:
            self._cut = None
            timer.cancel()
        now = self.clock.now()
        if now < end:
            batch, cost = self._split(batch, cost, max(0.0, now - start))
            await self.clock.sleep_until(start + cost.total_us / 1e6)
        return batch, cost

    def _record(self, duration: float, lag: float, cost: Cost, num_steps: int = 1) -> None:
        stats = self.stats
        stats.num_steps += num_steps
        stats.busy_s += duration
        stats.last_step_s = duration
        stats.lag_s = lag
        stats.max_lag_s = max(stats.max_lag_s, lag)
        stats.last_cost = cost
