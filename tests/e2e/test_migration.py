"""Faults on a live stack (every service a process, real Redis): a fabric fault is routed around, a
frozen decode worker's streams move after the liveness time, a killed one's at once, and every
client receives exactly the fault-free tokens. The tests share one stack and run in this order (the
last one kills a worker)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from supernode.core import tokens
from supernode.launcher import LocalStack, StackConfig
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.sdk import AsyncClient
from supernode.v1 import fabric_pb2, fabric_pb2_grpc

pytestmark = pytest.mark.e2e
NUM_STREAMS = 6
MAX_TOKENS = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    config = StackConfig(
        num_prefill=1,
        num_decode=2,
        ephemeral_ports=True,
        log_dir=tmp_path_factory.mktemp("migration"),
        env={
            "SUPERNODE_DECODE__NUM_DIES": "16",  # a node each, so a node outage takes out one
            "SUPERNODE_ROUTER__LIVENESS_S": "2",
            "SUPERNODE_ROUTER__LOAD_POLL_S": "0.5",
            "SUPERNODE_ROUTER__FAULT_POLL_S": "0.2",
        },
    )
    s = LocalStack(config)
    try:
        asyncio.run(s.start())
    except BaseException:
        s.stop()
        raise
    yield s
    s.stop()


def _prompt(i: int) -> list[int]:
    return [1000 + 37 * i + (k * 13) % 211 for k in range(300)]


async def _fabric(stack: LocalStack, call: str, request: object) -> object:
    async with open_channel(stack.address("fabric"), Settings()) as channel:
        return await getattr(fabric_pb2_grpc.FabricStub(channel), call)(request, timeout=5)


async def _router_logged(stack: LocalStack, text: str, bound_s: float = 30.0) -> None:
    """Waits until the router's log says `text` (its fault poll's verdict), at most `bound_s`."""
    for _ in range(int(bound_s / 0.05)):
        if text in stack.tail("router", 400):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the router never logged {text!r}:\n{stack.tail('router')}")


async def test_a_node_outage_is_routed_around(stack):
    reply = await _fabric(stack, "Describe", fabric_pb2.DescribeRequest())
    (lease,) = [lease for lease in reply.leases if lease.worker_id == "decode-0"]
    fault = fabric_pb2.InjectFaultRequest(node=lease.dies[0] // 16, bandwidth_factor=0.0, duration_s=60)
    decode_0 = stack.address("decode-0")
    await _fabric(stack, "InjectFault", fault)
    try:
        await _router_logged(stack, f"{decode_0} is behind a fabric fault")  # its fault poll saw it
        async with AsyncClient(stack.router_address, timeout_s=60) as client:
            done = await asyncio.gather(
                *(client.complete(token_ids=_prompt(100 + i), max_tokens=4, seed=i) for i in range(6))
            )
    finally:
        await _fabric(stack, "ClearFaults", fabric_pb2.ClearFaultsRequest())
        await _router_logged(stack, f"{decode_0} is no longer behind a fabric fault")
    decode_1 = stack.address("decode-1")
    assert {c.stats.decode_worker for c in done} == {decode_1}, "decode-0 sits behind the fault"
    assert all(c.stats.num_migrations == 0 for c in done), "routed around, not broken and moved"


async def _streams_through(stack: LocalStack, hit: signal.Signals) -> list[tuple[list[int], int]]:
    """NUM_STREAMS streams; once each has tokens, `hit` goes to decode-0. Returns (tokens, migrations)."""
    streaming = asyncio.Event()
    num_started = 0
    async with AsyncClient(stack.router_address, timeout_s=90) as client:

        async def one(i: int) -> tuple[list[int], int]:
            nonlocal num_started
            await asyncio.sleep(0.3 * i)  # the router spreads requests by its load reports
            ids: list[int] = []
            migrations = -1
            async for chunk in client.generate(token_ids=_prompt(i), max_tokens=MAX_TOKENS, seed=i):
                ids += chunk.token_ids
                if len(ids) >= 8 and len(ids) - len(chunk.token_ids) < 8:
                    num_started += 1
                    if num_started == NUM_STREAMS:
                        streaming.set()
                if chunk.stats is not None:
                    migrations = chunk.stats.num_migrations
            return ids, migrations

        tasks = [asyncio.create_task(one(i)) for i in range(NUM_STREAMS)]
        await asyncio.wait_for(streaming.wait(), 60)
        stack.proc("decode-0").popen.send_signal(hit)
        try:
            return await asyncio.gather(*tasks)
        finally:
            if hit == signal.SIGSTOP:
                stack.proc("decode-0").popen.send_signal(signal.SIGCONT)


def _check(results: list[tuple[list[int], int]]) -> None:
    for i, (ids, _) in enumerate(results):
        assert ids == tokens.TokenModel(_prompt(i), i).generate(MAX_TOKENS), (
            f"stream {i}: the fault-free tokens"
        )
    assert any(migrations >= 1 for _, migrations in results), "the streams on decode-0 moved"


async def test_a_frozen_decode_worker_s_streams_move_after_the_liveness_time(stack):
    _check(await _streams_through(stack, signal.SIGSTOP))


async def test_a_killed_decode_worker_s_streams_continue_elsewhere(stack):
    _check(await _streams_through(stack, signal.SIGKILL))
