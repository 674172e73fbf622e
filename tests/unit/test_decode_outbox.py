"""The decode stream's buffer: bounded at one pending chunk, a slow reader loses nothing."""

from __future__ import annotations

import asyncio

from supernode.core.request import Request, Sampling
from supernode.decode.engine import _Outbox


def _request() -> Request:
    return Request("r", [1, 2, 3], 8, Sampling(seed=1))


async def test_steps_pushed_before_the_reader_takes_them_arrive_as_one_chunk_in_order() -> None:
    outbox, request = _Outbox(), _request()
    for step in ([10], [11, 12], [13]):
        outbox.on_tokens(request, step, len(step))
    request.finish_reason = "length"
    outbox.on_done(request)
    first = await outbox.get()
    assert (first.token_ids, first.num_tokens, first.finished) == ([10, 11, 12, 13], 4, False)
    last = await outbox.get()
    assert last.finished and last.finish_reason == "length" and last.token_ids == []


async def test_a_waiting_reader_wakes_on_the_next_step_and_counted_totals_become_deltas() -> None:
    outbox, request = _Outbox(), _request()
    request.token_plan = [1, 2, 4]  # counted only: on_tokens gets the running total
    reader = asyncio.ensure_future(outbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    outbox.on_tokens(request, [], 2)
    assert (await reader).num_tokens == 2
    outbox.on_tokens(request, [], 3)
    outbox.on_tokens(request, [], 5)
    assert (await outbox.get()).num_tokens == 3, "two steps' deltas (1 + 2) in one chunk"
