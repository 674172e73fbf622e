"""A step after an idle spell starts when its work was ready, not when the host delivered it."""

from __future__ import annotations

import asyncio

from supernode.hw.cost import Cost
from supernode.runtime.clock import VirtualClock
from supernode.runtime.engine import StepLoop

STEP_S = 0.010


async def _step_ends(clock: VirtualClock, ready_before_now_s: list[float]) -> list[float]:
    """Runs one 10 ms step per entry, each after an idle spell, its work ready that long before the
    loop picks it up; returns when each step ended (emulated)."""
    work: list[float] = []
    ends: list[float] = []
    done = asyncio.Event()

    def ready_at(batch: float) -> float:
        return clock.now() - batch

    def postprocess(batch: float, cost: Cost) -> None:
        ends.append(clock.now())
        done.set()

    loop: StepLoop[float] = StepLoop(
        "t", clock, lambda: work.pop() if work else None, lambda _: Cost(STEP_S * 1e6, {}), postprocess,
        ready_at=ready_at,
    )  # fmt: skip
    loop.start()
    try:
        for delay in ready_before_now_s:
            await clock.sleep(1.0)  # idle
            done.clear()
            work.append(delay)
            loop.wake()
            await done.wait()
        assert loop.stats.max_lag_s == 0.0, "the host's delay is absorbed into the step, never lag"
    finally:
        await loop.stop()
    return ends


async def test_the_hosts_delay_before_an_idle_step_is_taken_out_of_it() -> None:
    clock = VirtualClock(start=100.0)
    ends = await _step_ends(clock, [0.003, 0.0, 5e-7])
    # Ready 3 ms before the loop had it: the step ran from then, so it ends 7 ms after now.
    assert abs(ends[0] - (101.0 + STEP_S - 0.003)) < 1e-9
    # No delay, and one under a microsecond: from now.
    assert abs(ends[1] - (ends[0] + 1.0 + STEP_S)) < 1e-9
    assert abs(ends[2] - (ends[1] + 1.0 + STEP_S)) < 1e-9


async def test_no_step_starts_more_than_its_length_ago() -> None:
    clock = VirtualClock(start=100.0)
    ends = await _step_ends(clock, [0.5])
    assert abs(ends[0] - 101.0) < 1e-9, "ready long before: the step ends now, not in the past"
