"""An asyncio event loop whose time is virtual: when nothing is ready, time jumps to the next timer.

Every `asyncio.sleep`, `call_at` and `asyncio.timeout` then runs on emulated time, so the engines, the
fabric's flow model and the load generator's arrivals all advance together, as fast as the host
computes them. Real I/O still works (the selector is polled without blocking), but nothing may wait on
it: when no timer is left and nothing is ready, the run is stuck and `select` says so.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector:
    """Polls the real selector without blocking and moves the loop's time by the wait it was asked for."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._num_registered = len(inner.get_map())  # kept here: `select` runs every loop iteration

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self._inner.register(fileobj, events, data)
        self._num_registered += 1
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = self._inner.unregister(fileobj)
        self._num_registered -= 1
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # Only the loop's self-pipe registered: nothing to poll (a thread's call_soon_threadsafe puts
        # its callback on the ready queue itself; the pipe only wakes a blocking select).
        events = self._inner.select(0) if self._num_registered > 1 else []
        if events or timeout == 0:
            return events
        if timeout is None:
            raise RuntimeError("simulation stuck: every task waits and no timer is set")
        self._loop.virtual_s += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start_s: float = 0.0) -> None:
        super().__init__()
        self.virtual_s = start_s  # emulated seconds
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type,arg-type]

    def time(self) -> float:
        return self.virtual_s


class LoopClock:
    """The `Clock` of a virtual-time loop: its time is the loop's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, instant: float) -> None:
        await asyncio.sleep(max(0.0, instant - self._loop.time()))

    def call_at(self, instant: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Calls `callback` at emulated `instant`: a timer on the loop, no task."""
        return self._loop.call_at(instant, callback)


def run_virtual(main: Coroutine[Any, Any, T], start_s: float = 0.0) -> T:
    """Runs `main` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop(start_s)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
