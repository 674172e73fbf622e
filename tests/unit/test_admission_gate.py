"""The admission gate: bounded in flight, per key, and in queueing time; refusals are immediate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from supernode.runtime import admission
from supernode.runtime.admission import Gate, ShedError


def refused_at_once(call: Coroutine[Any, Any, None]) -> ShedError:
    """The refusal `call` (a gate's `acquire`) raises in its first step: it never suspended, so it
    cannot have waited, whatever the machine's load."""
    try:
        call.send(None)
    except ShedError as err:
        return err
    except StopIteration:
        raise AssertionError("admitted, not refused") from None
    finally:
        call.close()
    raise AssertionError("suspended (waited) instead of refusing at once")


async def test_full_gate_without_wait_refuses_at_once_and_slots_come_back():
    gate = Gate(2, 0.0)
    await gate.acquire()
    await gate.acquire()
    err = refused_at_once(gate.acquire())
    assert err.reason == "full" and err.retry_after_s == 1.0
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


async def test_expected_wait_beyond_the_bound_is_refused_without_waiting(monkeypatch: pytest.MonkeyPatch):
    now = [0.0]  # the gate's clock, moved by hand: the interval it learns is exact
    monkeypatch.setattr(admission, "time", SimpleNamespace(monotonic=lambda: now[0]))
    gate = Gate(1, 3.0)
    for _ in range(3):  # releases 2 s apart: the gate learns the interval
        await gate.acquire()
        now[0] += 2.0
        gate.release()
    await gate.acquire()
    first = asyncio.ensure_future(gate.acquire())  # first in line, expected 2 s: waits
    await asyncio.sleep(0)
    assert gate.num_waiting == 1
    err = refused_at_once(gate.acquire())  # second in line, expected 4 s > 3 s
    assert err.reason == "wait" and "expected wait 4.00s" in err.message
    assert gate.num_waiting == 1 and not first.done()  # it never joined the line
    gate.release()
    await first
    assert gate.num_inflight == 1


async def test_waiting_is_bounded_in_time_and_per_key():
    gate = Gate(1, 0.1, max_per_key=1)
    await gate.acquire("a")
    assert refused_at_once(gate.acquire("a")).reason == "per_key"
    started = time.monotonic()
    waiter = asyncio.ensure_future(gate.acquire("b"))
    await asyncio.sleep(0)
    assert gate.num_waiting == 1  # within the bound it waits...
    with pytest.raises(ShedError) as err:
        await waiter  # ...and no release comes: refused when the bound has passed, not before
    assert err.value.reason == "wait" and "no slot within the 0.1s" in err.value.message
    assert time.monotonic() - started >= 0.09  # a lower bound: a loaded machine only adds to it
    assert gate.num_waiting == 0
