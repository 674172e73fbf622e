"""The virtual-time loop's own iteration runs callbacks in exactly asyncio's order."""

from __future__ import annotations

import asyncio
import random

import pytest

from supernode.sim.loop import VirtualTimeLoop


class AsyncioIterationLoop(VirtualTimeLoop):
    """The same virtual clock, iterated by asyncio's own `_run_once` (through the jumping selector)."""

    def _run_once(self) -> None:
        asyncio.SelectorEventLoop._run_once(self)  # type: ignore[attr-defined]


async def churn(seed: int) -> list[tuple[float, str]]:
    """Sleeps, equal-time timers, call_soon chains, cancelled timers (enough to trigger asyncio's
    purge of cancelled handles), timeouts and cancelled tasks; returns what ran when."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    trace: list[tuple[float, str]] = []

    async def worker(k: int) -> None:
        for i in range(30):
            trace.append((loop.time(), f"w{k}.{i}"))
            choice = rng.random()
            if choice < 0.3:
                await asyncio.sleep(rng.choice((0.0, 0.5, 1.0)))  # many timers due at the same instant
            elif choice < 0.5:
                stamp = (0.0, f"t{k}.{i}")
                timers = [loop.call_later(rng.random(), trace.append, stamp) for _ in range(8)]
                for t in timers[:7]:
                    t.cancel()
                await asyncio.sleep(rng.random())
            elif choice < 0.7:
                try:
                    async with asyncio.timeout(rng.random() / 4):
                        await asyncio.sleep(rng.random())
                except TimeoutError:
                    trace.append((loop.time(), f"timeout{k}.{i}"))
            else:
                loop.call_soon(trace.append, (loop.time(), f"soon{k}.{i}"))
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(worker(k)) for k in range(40)]
    await asyncio.sleep(3.0)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return trace


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_lean_iteration_runs_what_asyncio_runs_in_the_same_order(seed: int):
    traces = []
    for cls in (AsyncioIterationLoop, VirtualTimeLoop):
        loop = cls()
        try:
            traces.append(loop.run_until_complete(churn(seed)))
        finally:
            loop.close()
    assert len(traces[0]) > 1000
    assert traces[1] == traces[0]


def test_a_loop_with_nothing_left_to_wait_for_says_it_is_stuck():
    loop = VirtualTimeLoop()
    try:
        with pytest.raises(RuntimeError, match="stuck"):
            loop.run_until_complete(loop.create_future())
    finally:
        loop.close()
