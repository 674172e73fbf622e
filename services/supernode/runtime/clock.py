"""Emulated time. One `time_scale` for every service: emulated seconds = wall seconds x time_scale.

Only the worker step loop and the fabric wait on a clock; everything else reads `now()` to stamp
events. `ScaledClock` is anchored to the wall clock (time.time) so that emulated instants agree across
processes on one host; `VirtualClock` is a manual clock for tests and fast deterministic runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Protocol

# Anchor of emulated time (2025-01-01T00:00:00Z) so emulated instants stay small and comparable.
EPOCH_WALL_S = 1_735_689_600.0


class Clock(Protocol):
    def now(self) -> float:
        """Emulated seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Waits `seconds` of emulated time."""
        ...

    async def sleep_until(self, instant: float) -> None:
        """Waits until emulated time `instant`."""
        ...


class Timer(Protocol):
    def cancel(self) -> object:
        """Stops the call if it has not happened yet."""
        ...


def call_at(clock: Clock, instant: float, callback: Callable[[], None]) -> Timer:
    """Calls `callback` on the running event loop at emulated time `instant` (soon when it has passed):
    with the clock's own timer when it has one (`call_at`: no task per wait), else from a task that
    sleeps on the clock."""
    own = getattr(clock, "call_at", None)
    if own is not None:
        timer: Timer = own(instant, callback)
        return timer

    async def ring() -> None:
        await clock.sleep_until(instant)
        callback()

    return asyncio.ensure_future(ring())


class ScaledClock:
    """Wall-anchored emulated time; 0.1 runs ten times slower than real time."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale

    def now(self) -> float:
        return (time.time() - EPOCH_WALL_S) * self.time_scale

    def to_wall(self, emulated_s: float) -> float:
        """Wall seconds that `emulated_s` of emulated time takes."""
        return emulated_s / self.time_scale

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds / self.time_scale)
        else:
            await asyncio.sleep(0)

    async def sleep_until(self, instant: float) -> None:
        await self.sleep(instant - self.now())

    def call_at(self, instant: float, callback: Callable[[], None]) -> Timer:
        delay = max(0.0, (instant - self.now()) / self.time_scale)
        return asyncio.get_running_loop().call_later(delay, callback)


class VirtualClock:
    """A clock that only moves when every sleeper is waiting: time jumps to the earliest wake-up.

    `run_until_idle`-style driving is implicit: a background task advances time when the event loop
    has nothing else ready (checked by yielding a few times). Suited to service tests on one loop.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self._num_holds = 0  # while above 0, time stands still

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Time stands still inside (sleepers keep waiting), so calls that travel over real sockets
        all arrive at one emulated instant; it moves on as usual after."""
        self._num_holds += 1
        try:
            yield
        finally:
            self._num_holds -= 1
            if self._sleepers:
                self._ensure_driver()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, instant: float) -> None:
        if instant <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (instant, next(self._seq), future))
        self._ensure_driver()
        await future

    def call_at(self, instant: float, callback: Callable[[], None]) -> Timer:
        loop = asyncio.get_running_loop()
        if instant <= self._now:
            return loop.call_soon(callback)
        future: asyncio.Future[None] = loop.create_future()
        future.add_done_callback(lambda f: None if f.cancelled() else callback())
        heapq.heappush(self._sleepers, (instant, next(self._seq), future))
        self._ensure_driver()
        return future

    def advance(self, seconds: float) -> None:
        """Moves time forward by hand, waking every sleeper due."""
        self._wake_until(self._now + seconds)

    def _wake_until(self, instant: float) -> None:
        self._now = max(self._now, instant)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _ensure_driver(self) -> None:
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        while self._sleepers:
            for _ in range(20):  # let every ready task run before time jumps
                await asyncio.sleep(0)
            if self._num_holds:
                return  # restarted when the hold ends
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps set no time
                heapq.heappop(self._sleepers)
            if self._sleepers:
                self._wake_until(self._sleepers[0][0])
