"""`VirtualClock` (service tests' clock): time jumps to the next sleeper once every task waits."""

from __future__ import annotations

import asyncio

from supernode.runtime.clock import VirtualClock


async def test_time_jumps_to_the_earliest_sleeper():
    clock = VirtualClock(start=5.0)
    await clock.sleep(2.0)
    assert clock.now() == 7.0


async def test_time_stands_still_while_held_and_moves_on_after():
    clock = VirtualClock()
    sleeper = asyncio.ensure_future(clock.sleep(1.0))
    with clock.held():
        for _ in range(200):  # far more yields than the driver needs to jump
            await asyncio.sleep(0)
        assert clock.now() == 0.0 and not sleeper.done()
    await sleeper
    assert clock.now() == 1.0
