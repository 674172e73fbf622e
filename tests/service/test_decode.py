"""The decode service in-process on a virtual clock, with the fabric and pool logic in-process."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from supernode.core import blocks, topology
from supernode.core.request import KV_UNREACHABLE
from supernode.decode.service import build
from supernode.hw import cost as hw_cost
from supernode.inproc import InprocFabric
from supernode.kvpool.local import LocalPool
from supernode.runtime.channels import open_channel
from supernode.runtime.clock import VirtualClock
from supernode.runtime.deployments import decode_deployment
from supernode.runtime.peers import PoolBlock
from supernode.v1 import common_pb2, decode_pb2, decode_pb2_grpc
from tests.conftest import make_settings

BLOCK = 128


@pytest.fixture
async def make_decode(host_factory):
    channels, fabrics = [], []

    async def start(**decode):
        settings = make_settings(decode={"num_dies": 2, "mtp_depth": 0, "metrics_port": 0, **decode})
        clock = VirtualClock(start=100.0)
        fabric, pool = InprocFabric(clock), LocalPool()
        fabric.start()
        fabrics.append(fabric)
        host = await host_factory(settings, build(settings, clock, fabric, pool))
        channel = open_channel(host.address, settings)
        channels.append(channel)
        return decode_pb2_grpc.DecodeStub(channel), pool, host.service.engine, clock

    yield start
    for channel in channels:
        await channel.close()
    for fabric in fabrics:
        await fabric.stop()


async def prefilled(pool: LocalPool, request_id: str, prompt: list[int]) -> common_pb2.KvHandle:
    keys = blocks.block_keys(prompt, BLOCK)
    await pool.put([PoolBlock(k, t) for k, t in zip(keys, blocks.split_blocks(prompt, BLOCK), strict=True)])
    return common_pb2.KvHandle(
        request_id=request_id,
        block_keys=keys,
        num_tokens=len(prompt),
        nominal_bytes=len(prompt) * 70_272,
        prefill_die=700,
        block_tokens=BLOCK,
    )


async def start_decode(stub, pool, rid: str, prompt: list[int], max_tokens: int):  # noqa: ANN001, ANN201
    """Reserves, stores the prompt's KV and starts the Decode stream; returns the call."""
    reservation = await stub.Reserve(
        decode_pb2.ReserveRequest(request_id=rid, num_prompt_tokens=len(prompt), max_tokens=max_tokens)
    )
    kv = await prefilled(pool, rid, prompt)
    request = decode_pb2.DecodeRequest(
        reservation_id=reservation.reservation_id, kv=kv, first_token=300, max_tokens=max_tokens
    )
    return stub.Decode(request)


async def collected(call) -> list[decode_pb2.DecodeChunk]:  # noqa: ANN001
    return [chunk async for chunk in call]


async def decode_all(stub, pool, service, clock, requests) -> list[list[decode_pb2.DecodeChunk]]:  # noqa: ANN001
    """Decodes (request id, prompt, max_tokens) concurrently; the chunks of each.

    The virtual clock jumps whenever the loop idles, as it does while calls cross sockets; on a slow
    host enough jumps would expire a reservation (reservation_ttl_s) before its Decode arrives. So
    the streams reserve and start on a held clock, and time moves once each has its reservation."""
    with clock.held():
        calls = [
            await start_decode(stub, pool, rid, prompt, max_tokens) for rid, prompt, max_tokens in requests
        ]
        for _ in range(1000):  # a guard against a hang (10 s)
            if not service.reserved:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"reservations never claimed: {sorted(service.reserved)}")
    return list(await asyncio.gather(*(collected(call) for call in calls)))


async def test_every_request_gets_its_tokens_and_capacity_returns(make_decode):
    stub, pool, service, clock = await make_decode()
    requests = [(f"r{i}", [400 + i] * (200 + 50 * i), 12) for i in range(6)]
    results = await decode_all(stub, pool, service, clock, requests)
    for chunks in results:
        assert sum(len(c.token_ids) for c in chunks) == 11, "the first of 12 came from prefill"
        assert chunks[-1].finished and chunks[-1].finish_reason == "length"
        assert chunks[0].kv_pull_s > 0, "the P->D RDMA pull was charged"
    assert service.scheduler.kv_reserved == [0, 0] and service.scheduler.num_reserved == 0
    assert not service.reserved


async def test_step_time_comes_from_the_cost_model(make_decode):
    stub, pool, service, clock = await make_decode(num_dies=1)
    start = clock.now()
    (chunks,) = await decode_all(stub, pool, service, clock, [("solo", [500] * 1000, 9)])
    assert chunks[-1].num_steps == 8
    dep = decode_deployment(service.cfg)
    # One sequence alone: 8 steps at context 1001..1008; the RDMA pull is charged before them.
    expected = sum(hw_cost.decode_step_cost(dep, 1, [1001 + k]).total_us for k in range(8)) / 1e6
    assert service.loop.stats.busy_s == pytest.approx(expected, rel=1e-6)
    assert clock.now() - start >= expected


async def test_missing_kv_is_failed_precondition_and_releases(make_decode):
    stub, pool, service, clock = await make_decode()
    with clock.held():  # the reservation must not expire before its Decode (see decode_all)
        reservation = await stub.Reserve(
            decode_pb2.ReserveRequest(request_id="x", num_prompt_tokens=10, max_tokens=5)
        )
        kv = common_pb2.KvHandle(request_id="x", block_keys=["ab" * 16], num_tokens=10, block_tokens=BLOCK)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Decode(
                decode_pb2.DecodeRequest(
                    reservation_id=reservation.reservation_id, kv=kv, first_token=1, max_tokens=5
                )
            ):
                pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and err.value.details().startswith("kv:")
    assert service.scheduler.kv_reserved == [0, 0]


@pytest.mark.parametrize("side", ["prefill", "decode"])
async def test_a_pull_refused_for_the_kvs_own_die_says_kv_unreachable_else_unavailable(make_decode, side):
    """The router recomputes KV that cannot be pulled from its die, and moves a request whose decode
    side cannot receive: the status and message over gRPC tell it which."""
    stub, pool, service, clock = await make_decode()
    if side == "prefill":
        ports = [topology.rdma_port(700, "tx")]  # `prefilled` puts the KV on die 700
    else:
        ports = [topology.rdma_port(service.lease.die(rank).index, "rx") for rank in range(2)]
    with clock.held():
        service.fabric.network.inject(ports, 0.0, 1000.0)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collected(await start_decode(stub, pool, "x", [400] * 300, 5))
    if side == "prefill":
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details().startswith(KV_UNREACHABLE) and ports[0] in err.value.details()
    else:
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "path down" in err.value.details()
    assert service.scheduler.kv_reserved == [0, 0]


async def test_bad_requests_name_the_field(make_decode):
    stub, _, _, _ = await make_decode()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Reserve(decode_pb2.ReserveRequest(request_id="a", num_prompt_tokens=0, max_tokens=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "num_prompt_tokens" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Reserve(decode_pb2.ReserveRequest(request_id="a", num_prompt_tokens=10**9, max_tokens=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Decode(decode_pb2.DecodeRequest(reservation_id="nope")):
            pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "reservation_id" in err.value.details()


async def test_tpot_slo_bounds_the_batch_per_die(make_decode, monkeypatch):
    # Without MTP one step is one token: 22 ms leaves room for a few sequences at these short contexts.
    stub, pool, service, clock = await make_decode(num_dies=1, tpot_slo_ms=22.0, max_batch_per_die=96)
    dep = decode_deployment(service.cfg)
    prompt_len, max_tokens = 200, 6
    # the bound at the longest and the shortest context a step sees (longer contexts allow fewer)
    low, high = (
        hw_cost.max_batch_per_die_for_tpot(dep, n, 22.0) for n in (prompt_len + max_tokens, prompt_len)
    )
    assert 1 <= low <= high < 96
    per_step: list[int] = []  # sequences on the die, each step (the gauge shows only the last)
    on_step = service.metrics.on_step

    def recorded(batch_size, batch_per_die, *rest):  # noqa: ANN001, ANN002, ANN202
        per_step.append(batch_per_die)
        return on_step(batch_size, batch_per_die, *rest)

    monkeypatch.setattr(service.metrics, "on_step", recorded)
    requests = [(f"s{i}", [600 + i] * prompt_len, max_tokens) for i in range(high + 8)]
    await decode_all(stub, pool, service, clock, requests)
    assert low <= max(per_step) <= high, per_step  # filled up to the bound, never past it


async def test_load_reports_capacity(make_decode):
    stub, _, service, clock = await make_decode()
    with clock.held():  # the reservation must not expire before the report (see decode_all)
        await stub.Reserve(decode_pb2.ReserveRequest(request_id="a", num_prompt_tokens=100, max_tokens=28))
        load = await stub.Load(common_pb2.LoadRequest())
    assert load.role == "decode" and load.kv_tokens_used == 128 and load.num_dies == 2
    assert load.kv_tokens_capacity == 2 * service.scheduler.kv_capacity


async def test_malformed_handles_are_invalid_argument(make_decode):
    stub, _, service, clock = await make_decode()
    cases = [
        (common_pb2.KvHandle(request_id="m", block_keys=["not-a-key"], num_tokens=10, block_tokens=BLOCK),
         "kv.block_keys[0]"),
        (common_pb2.KvHandle(request_id="m", block_keys=["ab" * 16], num_tokens=500, block_tokens=BLOCK),
         "kv.num_tokens"),
        (common_pb2.KvHandle(request_id="other", block_keys=["ab" * 16], num_tokens=10, block_tokens=BLOCK),
         "kv.request_id"),
    ]  # fmt: skip
    for kv, field in cases:
        with clock.held():  # the reservation must not expire before its Decode (see decode_all)
            reservation = await stub.Reserve(
                decode_pb2.ReserveRequest(request_id="m", num_prompt_tokens=10, max_tokens=5)
            )
            request = decode_pb2.DecodeRequest(
                reservation_id=reservation.reservation_id, kv=kv, first_token=1, max_tokens=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Decode(request):
                    pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    assert service.scheduler.kv_reserved == [0, 0], "every refused request released its capacity"
