"""The router in-process against fake prefill and decode servers (real gRPC on loopback)."""

from __future__ import annotations

import grpc
import pytest

from supernode.router.service import build
from supernode.runtime.server import ServiceHost
from supernode.sdk import AsyncClient, FailedPreconditionError, UnavailableError
from supernode.v1 import common_pb2, decode_pb2, decode_pb2_grpc, prefill_pb2, prefill_pb2_grpc
from tests.conftest import make_settings


class FakePrefill(prefill_pb2_grpc.PrefillServicer):
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def Prefill(self, request, context):  # noqa: N802
        self.calls += 1
        if self.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        kv = common_pb2.KvHandle(
            request_id=request.request_id, block_keys=["0" * 32], num_tokens=1, block_tokens=128
        )
        return prefill_pb2.PrefillResponse(first_token=300, kv=kv)

    async def Load(self, request, context):  # noqa: N802
        return common_pb2.LoadReport(role="prefill")


class FakeDecode(decode_pb2_grpc.DecodeServicer):
    def __init__(self, lose_kv_times: int = 0) -> None:
        self.lose_kv_times = lose_kv_times
        self.reserved: list[str] = []
        self.cancelled = 0

    async def Reserve(self, request, context):  # noqa: N802
        self.reserved.append(request.request_id)
        return decode_pb2.ReserveResponse(reservation_id=f"r{len(self.reserved)}")

    async def CancelReservation(self, request, context):  # noqa: N802
        self.cancelled += 1
        return decode_pb2.CancelReservationResponse(cancelled=True)

    async def Decode(self, request, context):  # noqa: N802
        if self.lose_kv_times > 0:
            self.lose_kv_times -= 1
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "kv: 1 of 1 blocks are gone from the pool"
            )
        for i in range(1, request.max_tokens):
            yield decode_pb2.DecodeChunk(token_ids=[300 + i])
        yield decode_pb2.DecodeChunk(finished=True, finish_reason="length")

    async def Load(self, request, context):  # noqa: N802
        return common_pb2.LoadReport(role="decode", kv_tokens_capacity=10**6)


class Fake:
    service_names: tuple[str, ...] = ()

    def __init__(self, servicer, add) -> None:
        self.servicer, self.add = servicer, add

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_fake(host_factory, servicer, add) -> ServiceHost:
    settings = make_settings()

    def _build(server, drain):
        add(servicer, server)
        return Fake(servicer, add)

    return await host_factory(settings, _build)


async def start_router(host_factory, prefills, decodes, **router):
    p_hosts = [
        await start_fake(host_factory, p, prefill_pb2_grpc.add_PrefillServicer_to_server) for p in prefills
    ]
    d_hosts = [
        await start_fake(host_factory, d, decode_pb2_grpc.add_DecodeServicer_to_server) for d in decodes
    ]
    settings = make_settings(
        router={
            "prefill_addresses": [h.address for h in p_hosts],
            "decode_addresses": [h.address for h in d_hosts],
            **router,
        }
    )
    host = await host_factory(settings, build(settings))
    return AsyncClient(host.address, timeout_s=10)


async def test_lost_kv_is_recomputed_once_and_tokens_sent_once(host_factory):
    prefill, decode = FakePrefill(), FakeDecode(lose_kv_times=1)
    client = await start_router(host_factory, [prefill], [decode])
    done = await client.complete(token_ids=[1, 2], max_tokens=5)
    assert done.token_ids == [300, 301, 302, 303, 304]
    assert prefill.calls == 2 and len(decode.reserved) == 2
    await client.close()


async def test_lost_kv_twice_is_an_error_not_a_wrong_answer(host_factory):
    client = await start_router(host_factory, [FakePrefill()], [FakeDecode(lose_kv_times=2)])
    with pytest.raises(FailedPreconditionError):
        await client.complete(token_ids=[1, 2], max_tokens=5)
    await client.close()


async def test_unavailable_prefill_is_skipped(host_factory):
    bad, good = FakePrefill(fail=True), FakePrefill()
    decode = FakeDecode()
    client = await start_router(host_factory, [bad, good], [decode])
    for _ in range(4):
        assert len((await client.complete(token_ids=[1], max_tokens=3)).token_ids) == 3
    assert good.calls == 4
    await client.close()


async def test_no_prefill_left_is_unavailable_and_reservation_cancelled(host_factory):
    decode = FakeDecode()
    client = await start_router(host_factory, [FakePrefill(fail=True)], [decode])
    with pytest.raises(UnavailableError):
        await client.complete(token_ids=[1], max_tokens=3)
    assert decode.cancelled == 1
    await client.close()


async def test_max_tokens_one_needs_no_decode_step(host_factory):
    decode = FakeDecode()
    client = await start_router(host_factory, [FakePrefill()], [decode])
    done = await client.complete(token_ids=[1], max_tokens=1)
    assert done.token_ids == [300] and done.finish_reason == "length"
    assert decode.reserved == [] and decode.cancelled == 0  # a one-token request never books decode
    await client.close()


async def test_kv_aware_policy_keeps_a_prefix_on_one_instance(host_factory):
    prefills = [FakePrefill(), FakePrefill(), FakePrefill()]
    client = await start_router(host_factory, prefills, [FakeDecode()], policy="kv_aware")
    shared = list(range(300, 300 + 128))
    for i in range(6):
        await client.complete(token_ids=shared + [i], max_tokens=1)
    assert sorted(p.calls for p in prefills) == [0, 0, 6]
    await client.close()


async def test_round_robin_policy_rotates(host_factory):
    prefills = [FakePrefill(), FakePrefill(), FakePrefill()]
    client = await start_router(host_factory, prefills, [FakeDecode()], policy="round_robin")
    for i in range(6):
        await client.complete(token_ids=[i], max_tokens=1)
    assert [p.calls for p in prefills] == [2, 2, 2]
    await client.close()


class FullDecode(FakeDecode):
    """Full for the first `full_times` reservations, then has room."""

    def __init__(self, full_times: int) -> None:
        super().__init__()
        self.full_times = full_times

    async def Reserve(self, request, context):  # noqa: N802
        if self.full_times > 0:
            self.full_times -= 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "decode full: no rank has room")
        return await super().Reserve(request, context)


async def test_a_full_decode_makes_requests_wait_not_fail(host_factory):
    decode = FullDecode(full_times=3)
    client = await start_router(host_factory, [FakePrefill()], [decode], reserve_wait_s=5.0)
    done = await client.complete(token_ids=[1], max_tokens=3)
    assert len(done.token_ids) == 3 and decode.full_times == 0
    await client.close()


async def test_waiting_for_decode_is_bounded(host_factory):
    from supernode.sdk import ResourceExhaustedError

    client = await start_router(
        host_factory, [FakePrefill()], [FullDecode(full_times=10**6)], reserve_wait_s=0.2
    )
    with pytest.raises(ResourceExhaustedError):
        await client.complete(token_ids=[1], max_tokens=3)
    await client.close()
