"""The stall watch of streamed writes (gRPC server streams, the HTTP relay): a write pending for the
timeout trips it, a steady stream of quick writes never does. On a virtual-time loop, so the instants
are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from supernode.runtime.errors import ResourceExhaustedError
from supernode.runtime.stall import WriteWatch, write_all
from supernode.sim.loop import run_virtual


async def _writes(durations: list[float], timeout_s: float) -> tuple[list[float], int]:
    """Writes that take `durations` seconds each, one after another; when (after the start) the watch
    tripped, and how many writes completed."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stalls: list[float] = []
    watch = WriteWatch(timeout_s, lambda: stalls.append(loop.time() - start))
    done = 0
    for duration in durations:
        await watch.write(asyncio.sleep(duration))
        done += 1
    watch.close()
    return stalls, done


def test_a_steady_stream_longer_than_the_timeout_is_not_a_stall() -> None:
    stalls, done = run_virtual(_writes([0.02] * 20, timeout_s=0.1))  # 0.4 s of quick writes
    assert (stalls, done) == ([], 20)


def test_one_write_pending_past_the_timeout_trips_it_once_on_time() -> None:
    stalls, done = run_virtual(_writes([0.05, 0.05, 0.35], timeout_s=0.2))
    assert done == 3
    assert len(stalls) == 1
    # The long write began at 0.1 s: tripped at 0.3 s, not at the first timer (0.2 s, from the
    # first write's start) and not after the write.
    assert abs(stalls[0] - 0.3) < 1e-6


class StuckContext:
    """A gRPC context whose writes after the first `num_ok` never complete (a reader that stopped)."""

    def __init__(self, num_ok: int) -> None:
        self.num_ok = num_ok
        self.written: list[int] = []

    async def write(self, item: int) -> None:
        if len(self.written) >= self.num_ok:
            await asyncio.get_running_loop().create_future()
        self.written.append(item)


async def _items(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def test_a_stuck_grpc_write_ends_the_stream_with_resource_exhausted_and_no_cancel_left() -> None:
    async def run() -> tuple[str, list[int], float, int]:
        context = StuckContext(num_ok=3)
        loop = asyncio.get_running_loop()
        try:
            await write_all(context, _items(10), 0.5, "Test")  # type: ignore[arg-type]
        except ResourceExhaustedError as err:
            task = asyncio.current_task()
            assert task is not None
            return err.code, context.written, loop.time(), task.cancelling()
        raise AssertionError("the stalled stream was not cut off")

    code, written, at, cancelling = run_virtual(run())
    assert (code, written, cancelling) == ("RESOURCE_EXHAUSTED", [0, 1, 2], 0)
    assert abs(at - 0.5) < 1e-6


def test_a_cancel_from_outside_during_a_write_stays_a_cancel() -> None:
    async def run() -> bool:
        task = asyncio.ensure_future(write_all(StuckContext(num_ok=0), _items(10), 5.0, "Test"))  # type: ignore[arg-type]
        await asyncio.sleep(1.0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert run_virtual(run())
