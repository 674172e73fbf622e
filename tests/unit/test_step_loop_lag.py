"""The step loop's lag total: how far behind its plan each busy spell ended, summed."""

from __future__ import annotations

import asyncio

from supernode.hw.cost import Cost
from supernode.runtime.engine import StepLoop
from supernode.sim.loop import LoopClock, run_virtual

LATE_S = 0.01  # every wake-up comes this much after the instant asked for (a host too slow)


class LateClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.t + seconds)

    async def sleep_until(self, instant: float) -> None:
        self.t = max(self.t, instant + LATE_S)
        await asyncio.sleep(0)


def _cost(us: float) -> Cost:
    return Cost(total_us=us, breakdown_us={})


async def test_lag_total_sums_the_lag_of_each_busy_spell() -> None:
    work: list[int] = []
    stepped = asyncio.Event()
    loop: StepLoop[int] = StepLoop(
        "t", LateClock(), lambda: work.pop() if work else None, lambda _: _cost(100_000.0),
        lambda b, c: stepped.set(),
    )  # fmt: skip

    async def steps(n: int) -> None:
        while loop.stats.num_steps < n:
            stepped.clear()
            await stepped.wait()
            await asyncio.sleep(0)  # the step is recorded just after postprocess

    loop.start()
    try:
        work.extend([1, 2, 3])  # one spell of three 0.1 s steps: planned back to back, ends 10 ms late
        loop.wake()
        await steps(3)
        await asyncio.sleep(0)  # the loop finds no work: the spell ends
        assert abs(loop.stats.lag_total_s - LATE_S) < 1e-9
        work.append(4)  # a second spell after idling: late once more
        loop.wake()
        await steps(4)
        assert abs(loop.stats.lag_total_s - 2 * LATE_S) < 1e-9
        assert abs(loop.stats.busy_s - 0.4) < 1e-9
    finally:
        await loop.stop()


def test_a_loop_stopped_mid_step_starts_its_next_step_when_started_again() -> None:
    """A frozen worker that carries on (`supernode sim --fault ...:stop@t+d`) steps from then, not
    from where the step it dropped was due to end (which would run the first steps back to back)."""

    async def main() -> list[float]:
        clock = LoopClock(asyncio.get_running_loop())
        ends: list[float] = []
        loop: StepLoop[int] = StepLoop(
            "t", clock, lambda: 1, lambda _: _cost(100_000.0), lambda b, c: ends.append(clock.now())
        )
        loop.start()
        await clock.sleep(0.25)  # steps end at 0.1 and 0.2; the third is due at 0.3
        await loop.stop()
        await clock.sleep(10.0)
        loop.start()
        await clock.sleep(0.25)
        await loop.stop()
        return ends

    ends = run_virtual(main())
    assert [round(t, 6) for t in ends] == [0.1, 0.2, 10.35, 10.45]
