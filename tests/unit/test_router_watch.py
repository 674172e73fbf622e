"""The router's watched calls: read in the caller's task, given up by cancelling that task."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator

import pytest

from supernode.router.watch import Abandoned, Watchdog
from supernode.runtime.clock import VirtualClock, call_at

TICK_S = 0.25


class Worker:
    def __init__(self) -> None:
        self.address = "w0"
        self.down_epoch = 0


async def _never() -> int:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_unary_call_past_its_deadline_is_abandoned():
    dog = Watchdog(VirtualClock(), TICK_S)
    with pytest.raises(Abandoned) as err:
        await dog.call(Worker(), _never(), "prefill", deadline_at=1.0)
    assert err.value.reason == "deadline"
    assert asyncio.current_task().cancelling() == 0  # nothing lingers
    assert not dog.watches


async def test_a_unary_call_to_a_worker_marked_down_is_abandoned():
    clock, worker = VirtualClock(), Worker()
    dog = Watchdog(clock, TICK_S)

    async def fall() -> None:
        await clock.sleep(0.6)
        worker.down_epoch += 1

    faller = asyncio.create_task(fall())
    with pytest.raises(Abandoned) as err:
        await dog.call(worker, _never(), "reserve", deadline_at=math.inf)
    await faller
    assert err.value.reason == "worker_down"


async def test_a_cancellation_from_elsewhere_still_cancels():
    dog = Watchdog(VirtualClock(), TICK_S)
    call = asyncio.create_task(dog.call(Worker(), _never(), "prefill", deadline_at=math.inf))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_silent_stream_is_abandoned_and_closed():
    closed = asyncio.Event()

    async def stream() -> AsyncGenerator[int, None]:
        try:
            yield 1
            await asyncio.Event().wait()
            yield 2
        finally:
            closed.set()

    dog = Watchdog(VirtualClock(), TICK_S)
    watch = dog.stream(Worker(), stream(), "decode", liveness_s=1.0, first_item_s=1.0)
    assert await watch.__anext__() == 1
    with pytest.raises(Abandoned) as err:
        await watch.__anext__()
    assert err.value.reason == "liveness" and closed.is_set()
    await watch.aclose()


async def test_a_stream_given_up_while_its_reader_is_busy_fails_at_the_next_read():
    clock = VirtualClock()
    closed = asyncio.Event()

    async def stream() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            closed.set()

    dog = Watchdog(clock, TICK_S)
    watch = dog.stream(Worker(), stream(), "decode", deadline_at=1.0)
    assert await watch.__anext__() == 1
    await clock.sleep(2.0)  # busy elsewhere past the deadline: the watchdog gives up meanwhile
    await asyncio.sleep(0)
    assert closed.is_set()  # the worker's stream was closed without waiting for the reader
    with pytest.raises(Abandoned) as err:
        await watch.__anext__()
    assert err.value.reason == "deadline"
    await watch.aclose()


async def test_a_clock_timer_fires_at_its_instant_unless_cancelled():
    clock = VirtualClock()
    fired: list[float] = []
    call_at(clock, 2.0, lambda: fired.append(clock.now()))
    call_at(clock, 1.0, lambda: fired.append(clock.now())).cancel()
    await clock.sleep(3.0)
    assert fired == [2.0]
