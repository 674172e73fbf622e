"""Worker step-loop supervision, the prefill queue-delay bound and idle gauges, over real gRPC on
loopback: a scheduler, pricer or postprocess that raises fails the waiting requests with a clear
UNAVAILABLE (never a hang), turns health NOT_SERVING and is counted."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supernode.decode.service import build as build_decode
from supernode.inproc import InprocFabric
from supernode.kvpool.local import LocalPool
from supernode.prefill import scoring
from supernode.prefill.service import build as build_prefill
from supernode.runtime.channels import open_channel
from supernode.runtime.clock import VirtualClock
from supernode.runtime.errors import RETRY_AFTER_KEY
from supernode.runtime.guard import SHED_TOTAL
from supernode.v1 import common_pb2, decode_pb2, decode_pb2_grpc, prefill_pb2, prefill_pb2_grpc
from tests.conftest import make_settings
from tests.service.test_decode import prefilled

BOUND_S = 10.0  # wall bound on anything a failure could hang


class HeldClock(VirtualClock):
    """A virtual clock that moves only when the test advances it (the step loop waits until then)."""

    def _ensure_driver(self) -> None:
        return None


@pytest.fixture
async def start_worker(host_factory):
    channels, fabrics = [], []

    async def start(role: str, clock: VirtualClock | None = None, **overrides):
        settings = make_settings(**{role: {"metrics_port": 0, **overrides}})
        clock = clock or VirtualClock(start=10.0)
        fabric, pool = InprocFabric(clock), LocalPool()
        fabric.start()
        fabrics.append(fabric)
        build = build_prefill if role == "prefill" else build_decode
        host = await host_factory(settings, build(settings, clock, fabric, pool))
        channel = open_channel(host.address, settings)
        channels.append(channel)
        return channel, host.service.engine, pool

    yield start
    for channel in channels:
        await channel.close()
    for fabric in fabrics:
        await fabric.stop()


async def health_of(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    return reply.status


def sample(engine, name: str, **labels: str) -> float | None:
    value = engine.metrics.registry.get_sample_value(name, {"worker": engine.worker_id, **labels})
    return value


def assert_stopped_error(err: grpc.aio.AioRpcError, role: str) -> None:
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert err.details() == f"{role} worker stopped: its step loop failed; retry on another instance"


async def test_a_raising_pricer_fails_queued_prefills_and_turns_the_worker_not_serving(
    start_worker, monkeypatch
):
    channel, engine, _ = await start_worker("prefill")
    stub = prefill_pb2_grpc.PrefillStub(channel)

    def broken_price(dep, batch):  # noqa: ANN001, ANN202
        raise RuntimeError("cost model bug at /srv/secret.py")

    monkeypatch.setattr(scoring, "price", broken_price)
    calls = [
        stub.Prefill(prefill_pb2.PrefillRequest(request_id=f"r{i}", token_ids=[400 + i] * 300))
        for i in range(3)
    ]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), BOUND_S)
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError), result
        assert_stopped_error(result, "prefill")
        assert "RuntimeError" not in result.details() and "secret" not in result.details()
    assert await health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # new work is refused at once, not queued
        late = prefill_pb2.PrefillRequest(request_id="late", token_ids=[9] * 9)
        await asyncio.wait_for(stub.Prefill(late), BOUND_S)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    load = await stub.Load(common_pb2.LoadRequest())
    assert load.draining and load.num_waiting == 0
    assert sample(engine, "supernode_prefill_step_failures_total", stage="price") == 1
    assert sample(engine, "supernode_prefill_serving") == 0
    assert sample(engine, "supernode_prefill_queue_length") == 0


async def reserve(stub, rid: str, num_prompt: int, max_tokens: int) -> str:
    reply = await stub.Reserve(
        decode_pb2.ReserveRequest(request_id=rid, num_prompt_tokens=num_prompt, max_tokens=max_tokens)
    )
    return str(reply.reservation_id)


@pytest.mark.parametrize("stage", ["schedule", "postprocess"])
async def test_a_step_failure_mid_stream_fails_decode_streams_and_releases_capacity(
    start_worker, monkeypatch, stage
):
    channel, engine, pool = await start_worker("decode", num_dies=2, mtp_depth=0)
    stub = decode_pb2_grpc.DecodeStub(channel)
    real = getattr(engine.scheduler, stage)
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 5:
            raise ValueError("scheduler bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.scheduler, stage, flaky)
    prompt = [500 + k for k in range(200)]
    # While the calls cross sockets the virtual clock would jump whenever the loop idles, and on a slow
    # host enough jumps expire the reservations (reservation_ttl_s) before their Decode arrives: hold
    # it until the stream has claimed its reservation.
    with engine.clock.held():
        streaming = await reserve(stub, "s", len(prompt), 64)
        idle = await reserve(stub, "idle", len(prompt), 64)  # reserved, its Decode not sent yet
        kv = await prefilled(pool, "s", prompt)
        request = decode_pb2.DecodeRequest(reservation_id=streaming, kv=kv, first_token=300, max_tokens=64)
        call = stub.Decode(request)
        await claimed(engine, streaming)
    chunks = []
    with pytest.raises(grpc.aio.AioRpcError) as broken:
        async with asyncio.timeout(BOUND_S):
            async for chunk in call:
                chunks.append(chunk)
    assert_stopped_error(broken.value, "decode")
    assert 0 < len(chunks) < 63 and not any(c.finished for c in chunks)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        kv_idle = await prefilled(pool, "idle", prompt)
        request = decode_pb2.DecodeRequest(reservation_id=idle, kv=kv_idle, first_token=300, max_tokens=64)
        await asyncio.wait_for(anext(aiter(stub.Decode(request))), BOUND_S)
    assert_stopped_error(late.value, "decode")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(stub, "new", 10, 10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    load = await stub.Load(common_pb2.LoadRequest())
    assert load.draining and load.num_running == 0 and load.num_waiting == 0 and load.kv_tokens_used == 0
    assert sample(engine, "supernode_decode_step_failures_total", stage=stage) == 1
    assert sample(engine, "supernode_decode_batch_size") == 0
    assert sample(engine, "supernode_decode_kv_tokens_used") == 0


async def claimed(engine, reservation_id: str) -> None:  # noqa: ANN001
    """Returns once the decode worker has taken up the reservation (its Decode call arrived)."""
    for _ in range(int(BOUND_S / 0.01)):  # a guard against a hang
        if reservation_id not in engine.reserved:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"reservation {reservation_id} never claimed")


async def test_idle_decode_gauges_drop_to_zero(start_worker):
    channel, engine, pool = await start_worker("decode", num_dies=2, mtp_depth=0)
    stub = decode_pb2_grpc.DecodeStub(channel)
    prompt = [700 + k for k in range(130)]
    with engine.clock.held():  # the reservation must not expire before its Decode (as above)
        rid = await reserve(stub, "g", len(prompt), 8)
        assert sample(engine, "supernode_decode_queue_length") == 1  # a reservation counts at once
        kv = await prefilled(pool, "g", prompt)
        request = decode_pb2.DecodeRequest(reservation_id=rid, kv=kv, first_token=300, max_tokens=8)
        call = stub.Decode(request)
        await claimed(engine, rid)
    assert [c async for c in call][-1].finished
    assert sample(engine, "supernode_decode_tokens_total") == 7
    for _ in range(100):  # the loop finds nothing to do right after the last step
        if sample(engine, "supernode_decode_batch_size") == 0:
            break
        await asyncio.sleep(0.01)
    assert sample(engine, "supernode_decode_batch_size") == 0
    assert sample(engine, "supernode_decode_batch_per_die") == 0
    assert sample(engine, "supernode_decode_tokens_per_second") == 0
    assert sample(engine, "supernode_decode_queue_length") == 0
    assert sample(engine, "supernode_decode_kv_tokens_used") == 0


async def test_a_prompt_that_would_wait_beyond_the_queue_delay_bound_is_refused_at_once(start_worker):
    clock = HeldClock(start=10.0)
    channel, engine, _ = await start_worker("prefill", clock, num_npus=1, max_queue_delay_s=0.5)
    stub = prefill_pb2_grpc.PrefillStub(channel)
    first = asyncio.ensure_future(
        stub.Prefill(prefill_pb2.PrefillRequest(request_id="a", token_ids=[800] * 16000))
    )
    for _ in range(500):  # until its batch is running (the held clock keeps it running)
        if engine.scheduler.num_running:
            break
        await asyncio.sleep(0.01)
    assert engine.queue_delay.estimate_s(engine.scheduler.num_waiting_tokens) > 0.5
    shed_before = SHED_TOTAL.labels("prefill", "queue_delay")._value.get()
    call = stub.Prefill(prefill_pb2.PrefillRequest(request_id="b", token_ids=[801] * 100))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(call, BOUND_S)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds the 0.5s queueing bound" in refused.value.details()
    trailers = dict(await call.trailing_metadata())
    assert float(trailers[RETRY_AFTER_KEY]) >= 0.5
    assert SHED_TOTAL.labels("prefill", "queue_delay")._value.get() == shed_before + 1
    clock.advance(60.0)  # the batch ends; the queue is empty again and admits
    assert (await asyncio.wait_for(first, BOUND_S)).kv.num_tokens == 16000
    second = stub.Prefill(prefill_pb2.PrefillRequest(request_id="c", token_ids=[802] * 100))
    pending = asyncio.ensure_future(second)
    for _ in range(200):
        if engine.scheduler.num_running:
            break
        await asyncio.sleep(0.01)
    clock.advance(60.0)
    assert (await asyncio.wait_for(pending, BOUND_S)).kv.num_tokens == 100
