"""SIGTERM to each service during load: in-flight requests finish and the process exits 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

from supernode.sdk import AsyncClient
from tests.e2e.conftest import start_stack

pytestmark = pytest.mark.e2e
NUM_REQUESTS = 8
MAX_TOKENS = 96


@pytest.mark.parametrize("victim", ["router", "decode-0", "prefill-0", "kvpool", "fabric"])
async def test_sigterm_drains_in_flight_work(tmp_path_factory, victim):
    # Half real time, so the requests are still streaming when the signal lands.
    stack = await start_stack(tmp_path_factory, SUPERNODE_RUNTIME__TIME_SCALE="0.5")
    try:
        streaming = asyncio.Event()
        started = 0
        async with AsyncClient(stack.router_address, timeout_s=120) as client:

            async def one(i: int) -> list[int]:
                nonlocal started
                ids: list[int] = []
                counted = False
                async for chunk in client.generate(token_ids=[500 + i] * 300, max_tokens=MAX_TOKENS, seed=i):
                    ids += chunk.token_ids
                    if len(ids) >= 2 and not counted:  # decode has started for this request
                        counted = True
                        started += 1
                        if started == NUM_REQUESTS:
                            streaming.set()
                return ids

            tasks = [asyncio.create_task(one(i)) for i in range(NUM_REQUESTS)]
            await asyncio.wait_for(streaming.wait(), 60)
            proc = stack.proc(victim).popen
            proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*tasks)
            assert all(len(ids) == MAX_TOKENS for ids in results), "every in-flight request finished"
            code = await asyncio.to_thread(proc.wait, 60)
            assert code == 0, f"{victim} exited {code}:\n{stack.tail(victim)}"
    finally:
        stack.stop()
