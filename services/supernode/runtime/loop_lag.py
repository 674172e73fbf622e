"""How late this process's event loop runs what is due: the wait a new request's first step will see.

A process whose loop is behind (its CPU taken by the streams it already relays, or by other processes
on a shared host) starts a newly arrived call late and writes its first token late, however short the
queue of requests ahead of it: the first-token queueing bound (runtime/start_delay.py) adds this lag to
its estimate, so that a host saturated by running streams refuses new ones instead of admitting them
into seconds of delay.

A timer fires every `PERIOD_S`, and how late it fired is how far behind the loop is running: the lag
is the last tick's lateness (what runs in the turns after it waited about as long), or, once the next
tick is overdue, how overdue it is so far if that is more (a loop that has stopped turning reads as
far behind as it is). The timer starts on the first reading inside a running loop and lasts as long
as that loop (a chain of `call_later` handles, not a task, so a closed loop simply drops it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PERIOD_S = 0.02  # wall seconds between ticks


class LoopLag:
    def __init__(self, period_s: float = PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        if period_s <= 0:
            raise ValueError("period_s: must be > 0")
        self.period_s, self.clock = period_s, clock
        self._last_s = 0.0  # how late the last tick fired
        self._due: float | None = None  # when the pending tick should fire
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the timer runs on

    def lag_s(self) -> float:
        """Wall seconds the loop is behind now (0.0 until it has been measured)."""
        self._ensure_running()
        overdue = 0.0 if self._due is None else self.clock() - self._due
        return max(self._last_s, overdue)

    def on_tick(self, now: float) -> None:
        """The pending tick fired at `now` (the timer's own step; public for tests)."""
        if self._due is not None:
            self._last_s = max(0.0, now - self._due)
        self._due = now + self.period_s

    def _ensure_running(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # read outside a loop: nothing to measure
        if loop is self._loop:
            return
        self._loop = loop
        self._last_s, self._due = 0.0, None
        self._fire(loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # read on another loop since: that one's timer counts now
        self.on_tick(self.clock())
        loop.call_later(self.period_s, self._fire, loop)
