"""The one step loop: schedule -> price -> clock.sleep -> postprocess -> publish.

Workers give it three plain functions; it owns the waiting. Pricing runs inline (the cost model is
fast); the loop yields to the event loop on every step, so RPC handlers keep running.

The loop is supervised and fail-stop: if `schedule`, `price`, the wait or `postprocess` raises, the
loop stops, records a `StepFailure` (the stage and the error), logs it with its traceback and calls
`on_failure`, which fails the worker's requests and takes the service out of rotation (the
scheduler's state can no longer be trusted, so it does not run another step).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from supernode.hw.cost import Cost
from supernode.runtime.clock import Clock

log = logging.getLogger(__name__)
B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class StepFailure:
    """Why a step loop stopped."""

    stage: str  # schedule | price | wait | postprocess
    error: str  # the exception's class and message (for logs and operators, never for clients)


@dataclass(slots=True)
class StepStats:
    num_steps: int = 0
    busy_s: float = 0.0  # emulated seconds spent in steps
    last_step_s: float = 0.0
    lag_s: float = 0.0  # how far the loop is behind its emulated plan now (host slower than emulation)
    max_lag_s: float = 0.0  # the worst lag seen
    last_cost: Cost | None = None


class StepLoop(Generic[B]):
    def __init__(
        self,
        name: str,
        clock: Clock,
        schedule: Callable[[], B | None],
        price: Callable[[B], Cost],
        postprocess: Callable[[B, Cost], None],
        on_failure: Callable[[StepFailure], None] | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self._schedule = schedule
        self._price = price
        self._postprocess = postprocess
        self._on_failure = on_failure
        self.failure: StepFailure | None = None  # set once the loop has stopped on an error
        self._wake = asyncio.Event()
        self.stats = StepStats()
        self._task: asyncio.Task[None] | None = None
        self._prev_end = 0.0
        self._is_busy = False

    def wake(self) -> None:
        """Tells the loop there may be new work."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-steps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        stage = "schedule"
        try:
            while True:
                stage = "schedule"
                batch = self._schedule()
                if batch is None:
                    self._is_busy = False
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                stage = "price"
                cost = self._price(batch)
                duration = cost.total_us / 1e6
                # Back-to-back steps start where the previous one was due to end, so the host's own
                # work between steps (postprocess, RPCs, wake-up jitter) does not stretch emulated step
                # times; after an idle spell the next step starts now.
                stage = "wait"
                start = self._prev_end if self._is_busy else self.clock.now()
                end = start + duration
                await self.clock.sleep_until(end)
                self._prev_end, self._is_busy = end, True
                lag = self.clock.now() - end
                stage = "postprocess"
                self._postprocess(batch, cost)
                self._record(duration, max(0.0, lag), cost)
        except Exception as exc:  # noqa: BLE001 - every failure stops the loop and is reported
            self._fail(stage, exc)

    def _fail(self, stage: str, exc: Exception) -> None:
        self.failure = StepFailure(stage, f"{type(exc).__name__}: {exc}")
        self._is_busy = False
        log.error("%s: step loop stopped: %s raised", self.name, stage, exc_info=exc)
        if self._on_failure is not None:
            try:
                self._on_failure(self.failure)
            except Exception:  # noqa: BLE001 - the handler's own bug must not hide the first one
                log.exception("%s: step-failure handler failed", self.name)

    def _record(self, duration: float, lag: float, cost: Cost) -> None:
        stats = self.stats
        stats.num_steps += 1
        stats.busy_s += duration
        stats.last_step_s = duration
        stats.lag_s = lag
        stats.max_lag_s = max(stats.max_lag_s, lag)
        stats.last_cost = cost
