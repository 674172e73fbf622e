"""The one step loop: schedule -> price -> clock.sleep -> postprocess -> publish.

Workers give it three plain functions; it owns the waiting. Pricing runs inline (the cost model is
fast); the loop yields to the event loop on every step, so RPC handlers keep running.
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
    ) -> None:
        self.name = name
        self.clock = clock
        self._schedule = schedule
        self._price = price
        self._postprocess = postprocess
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
        while True:
            batch = self._schedule()
            if batch is None:
                if self._is_busy:  # a busy spell ends: its lag is settled, the next starts on time
                    self.stats.ended_lag_s += self.stats.lag_s
                    self.stats.lag_s = 0.0
                self._is_busy = False
                self._wake.clear()
                await self._wake.wait()
                continue
            cost = self._price(batch)
            duration = cost.total_us / 1e6
            # Back-to-back steps start where the previous one was due to end, so the host's own work
            # between steps (postprocess, RPCs, wake-up jitter) does not stretch emulated step times;
            # after an idle spell the next step starts now.
            start = self._prev_end if self._is_busy else self.clock.now()
            end = start + duration
            await self.clock.sleep_until(end)
            self._prev_end, self._is_busy = end, True
            lag = self.clock.now() - end
            try:
                self._postprocess(batch, cost)
            except Exception:  # a bug in one batch must not stop the worker
                log.exception("%s: postprocess failed", self.name)
            self._record(duration, max(0.0, lag), cost)

    def _record(self, duration: float, lag: float, cost: Cost) -> None:
        stats = self.stats
        stats.num_steps += 1
        stats.busy_s += duration
        stats.last_step_s = duration
        stats.lag_s = lag
        stats.max_lag_s = max(stats.max_lag_s, lag)
        stats.last_cost = cost
