"""The admission gate: bounded in flight, per key, and in queueing time; refusals are immediate."""

from __future__ import annotations

import asyncio
import time

import pytest

from supernode.runtime.admission import Gate, ShedError


async def test_full_gate_without_wait_refuses_at_once_and_slots_come_back():
    gate = Gate(2, 0.0)
    await gate.acquire()
    await gate.acquire()
    with pytest.raises(ShedError) as err:
        await gate.acquire()
    assert err.value.reason == "full" and err.value.retry_after_s == 1.0
    gate.release()
    await gate.acquire()
    assert gate.num_inflight == 2


async def test_a_waiter_gets_the_released_slot_in_order():
    gate = Gate(1, 2.0)
    await gate.acquire()
    order: list[int] = []

    async def wait(k: int) -> None:
        await gate.acquire()
        order.append(k)

    waiters = [asyncio.ensure_future(wait(k)) for k in range(2)]
    await asyncio.sleep(0.01)
    assert gate.num_waiting == 2
    gate.release()
    await asyncio.sleep(0.01)
    gate.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1] and gate.num_inflight == 1


async def test_expected_wait_beyond_the_bound_is_refused_without_waiting():
    gate = Gate(1, 0.3)
    for _ in range(3):  # releases 0.2 s apart: the gate learns the interval
        await gate.acquire()
        await asyncio.sleep(0.2)
        gate.release()
    await gate.acquire()
    first = asyncio.ensure_future(gate.acquire())  # first in line, expected 0.2 s: waits
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(ShedError) as err:
        await gate.acquire()  # second in line, expected 0.4 s > 0.3 s
    assert err.value.reason == "wait" and "expected wait" in err.value.message
    assert time.monotonic() - started < 0.05  # refused at once
    gate.release()
    await first
    assert gate.num_inflight == 1


async def test_waiting_is_bounded_in_time_and_per_key():
    gate = Gate(1, 0.1, max_per_key=1)
    await gate.acquire("a")
    with pytest.raises(ShedError) as err:
        await gate.acquire("a")
    assert err.value.reason == "per_key"
    started = time.monotonic()
    with pytest.raises(ShedError) as err:
        await gate.acquire("b")  # no release comes: refused when the bound passes
    assert err.value.reason == "wait" and 0.09 < time.monotonic() - started < 0.5
    assert gate.num_waiting == 0
