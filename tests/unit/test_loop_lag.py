"""How far behind an event loop runs (runtime/loop_lag.py): by hand, then on a real loop held still."""

from __future__ import annotations

import asyncio
import time

import pytest

from supernode.runtime.loop_lag import LoopLag


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_the_lag_is_the_last_ticks_lateness_or_the_pending_ones_if_more() -> None:
    clock = Clock()
    lag = LoopLag(period_s=0.02, clock=clock)
    assert lag.lag_s() == 0.0  # outside a loop, before any tick: nothing measured
    lag.on_tick(clock.now)  # the first tick only sets when the next is due
    clock.now += 0.01
    assert lag.lag_s() == 0.0  # the next is not due yet
    clock.now += 0.01 + 0.25
    assert lag.lag_s() == pytest.approx(0.25)  # overdue by 0.25 s so far: a loop standing still
    lag.on_tick(clock.now)
    assert lag.lag_s() == pytest.approx(0.25)  # it fired 0.25 s late: what runs now waited as long
    clock.now += 0.02 + 0.4
    assert lag.lag_s() == pytest.approx(0.4)  # the next is later still
    lag.on_tick(clock.now)
    clock.now += 0.02
    lag.on_tick(clock.now)  # on time again: the loop has caught up
    assert lag.lag_s() == 0.0


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period_s"):
        LoopLag(period_s=0.0)


async def test_a_loop_held_still_reads_at_least_as_far_behind_as_it_was_held() -> None:
    lag = LoopLag(period_s=0.01)
    lag.lag_s()  # starts the timer on this loop
    await asyncio.sleep(0.03)
    time.sleep(0.2)  # noqa: ASYNC251 - the point: nothing else runs on the loop meanwhile
    assert lag.lag_s() >= 0.15
