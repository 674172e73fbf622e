"""EarlyFirst: a call's offered first token is available before the call returns, and not before it is due."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import pytest

from supernode.runtime.clock import VirtualClock
from supernode.runtime.early_first import EarlyFirst, FirstTokenOffer


async def test_the_offered_token_comes_before_the_result():
    release = asyncio.Event()

    async def call(offer: Callable[[int], None]) -> str:
        offer(7)
        offer(8)  # a retry elsewhere offers again: the first offer counts
        await release.wait()
        return "stored"

    early = EarlyFirst(call)
    assert await early.first_token() == 7
    assert not early.task.done(), "the call goes on after its token was taken"
    release.set()
    assert await early.result() == "stored"


async def test_a_call_that_never_offers_gives_none_then_its_result():
    async def call(offer: Callable[[int], None]) -> str:
        await asyncio.sleep(0)
        return "done"

    early = EarlyFirst(call)
    assert await early.first_token() is None
    assert await early.result() == "done"


async def test_a_call_that_fails_before_offering_raises_its_error():
    async def call(offer: Callable[[int], None]) -> str:
        raise ValueError("refused")

    early = EarlyFirst(call)
    with pytest.raises(ValueError, match="refused"):
        await early.first_token()


async def test_cancel_stops_a_running_call_and_takes_a_late_error_as_seen():
    loop = asyncio.get_running_loop()
    unseen: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unseen.append(context))
    stopped = asyncio.Event()

    async def running(offer: Callable[[int], None]) -> None:
        offer(1)
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    early = EarlyFirst(running)
    assert await early.first_token() == 1
    early.cancel()
    await asyncio.wait_for(stopped.wait(), 1)

    async def failing(offer: Callable[[int], None]) -> None:
        offer(2)
        raise RuntimeError("store failed after the token went out")

    late = EarlyFirst(failing)
    assert await late.first_token() == 2
    await asyncio.sleep(0)  # the call has failed; its caller leaves without asking for the result
    late.cancel()
    del late
    gc.collect()
    assert not unseen, unseen


async def test_a_held_offer_is_taken_at_its_due_instant_not_before():
    clock = VirtualClock(start=5.0)
    release = asyncio.Event()

    async def call(offer: FirstTokenOffer) -> str:
        offer(7, 5.25)  # sent when its batch starts, due when it ends
        await release.wait()
        return "stored"

    early = EarlyFirst(call, clock)
    assert await early.first_token() == 7
    assert clock.now() == 5.25 and early.due_s == 5.25 and early.was_held
    release.set()
    assert await early.result() == "stored"


async def test_an_offer_withdrawn_before_it_is_due_never_counts():
    clock = VirtualClock(start=5.0)

    async def call(offer: FirstTokenOffer) -> str:
        offer(7, 5.25)
        await clock.sleep(0.1)
        offer.withdraw()  # its instance failed mid-batch
        await clock.sleep(0.5)
        offer(7, 5.9)  # the next instance computed it
        return "stored"

    early = EarlyFirst(call, clock)
    assert await early.first_token() == 7
    assert clock.now() == 5.9


async def test_a_held_offer_of_a_call_that_answered_is_still_taken_when_due():
    clock = VirtualClock(start=5.0)

    async def call(offer: FirstTokenOffer) -> str:
        offer(7, 5.25)
        return "done"

    early = EarlyFirst(call, clock)
    assert await early.first_token() == 7 and clock.now() == 5.25


async def test_a_held_offer_of_a_call_that_failed_is_dropped_with_its_error():
    clock = VirtualClock(start=5.0)

    async def call(offer: FirstTokenOffer) -> str:
        offer(7, 5.25)
        raise ValueError("instance died")

    early = EarlyFirst(call, clock)
    with pytest.raises(ValueError, match="died"):
        await early.first_token()
    assert clock.now() < 5.25


async def test_without_a_clock_to_hold_on_an_offer_is_taken_at_once_with_its_due_instant():
    release = asyncio.Event()

    async def call(offer: FirstTokenOffer) -> None:
        offer(7, 1e9)
        await release.wait()

    early = EarlyFirst(call)
    assert await early.first_token() == 7 and early.due_s == 1e9 and not early.was_held
    release.set()
    await early.result()
