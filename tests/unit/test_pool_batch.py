"""The batcher under the pool client: one call per turn, answers per caller, errors to the batch."""

from __future__ import annotations

import asyncio

import pytest

from supernode.runtime.errors import UnavailableError
from supernode.runtime.pool_batch import Batcher


class Doubler:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await asyncio.sleep(0.01)
        if self.fail:
            raise UnavailableError("pool down")
        return [2 * i for i in items]


async def test_calls_of_one_turn_go_out_together() -> None:
    send = Doubler()
    batcher: Batcher[int, int] = Batcher(send, lambda _: 1, max_weight=100)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert send.calls == [[0, 1, 2, 3, 4]]


async def test_batches_respect_the_weight_bound_and_the_inflight_limit() -> None:
    send = Doubler()
    batcher: Batcher[int, int] = Batcher(send, lambda i: i, max_weight=5, max_inflight=1)
    got = await asyncio.gather(*(batcher.submit(i) for i in (3, 2, 4, 9)))
    assert got == [6, 4, 8, 18]
    assert send.calls == [[3, 2], [4], [9]]  # 9 alone: heavier than the bound, it still goes (and alone)


async def test_a_lone_call_goes_out_at_once_and_waiters_join_the_next() -> None:
    send = Doubler()
    batcher: Batcher[int, int] = Batcher(send, lambda _: 1, max_weight=100, max_inflight=1)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.001)  # on the wire
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
    assert [await first, *[await r for r in rest]] == [2, 4, 6]
    assert send.calls == [[1], [2, 3]]


async def test_an_error_reaches_every_caller_of_the_batch() -> None:
    batcher: Batcher[int, int] = Batcher(Doubler(fail=True), lambda _: 1, max_weight=100)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, UnavailableError) for r in results)


async def test_a_caller_that_leaves_does_not_disturb_the_others() -> None:
    send = Doubler()
    batcher: Batcher[int, int] = Batcher(send, lambda _: 1, max_weight=100)
    leaving = asyncio.ensure_future(batcher.submit(1))
    staying = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == 4
    with pytest.raises(asyncio.CancelledError):
        await leaving
