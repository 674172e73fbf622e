"""The gRPC guard in front of every handler (runtime/guard.py), through a real router on loopback:
admission (RESOURCE_EXHAUSTED + retry-after-s), malformed protobuf, request ids, error hygiene."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from supernode.runtime.errors import ORIGIN_KEY, RETRY_AFTER_KEY
from supernode.runtime.guard import GENERATE
from supernode.sdk import InvalidArgumentError, ResourceExhaustedError
from supernode.v1 import decode_pb2
from tests.service.test_router import FakeDecode, FakePrefill, start_router


class SlowDecode(FakeDecode):
    """Streams its tokens 50 ms apart, so requests overlap."""

    async def Decode(self, request, context):  # noqa: N802
        for i in range(1, request.max_tokens):
            await asyncio.sleep(0.05)
            yield decode_pb2.DecodeChunk(token_ids=[300 + i])
        yield decode_pb2.DecodeChunk(finished=True, finish_reason="length")


class HeldDecode(FakeDecode):
    """Holds every stream before its first token until `released` is set: the requests stay admitted
    and in flight at the router for as long as a test needs, however slow the host."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()
        self.num_streams = 0  # streams begun
        self.num_active = 0  # streams not yet ended
        self.max_active = 0

    async def Decode(self, request, context):  # noqa: N802
        self.num_streams += 1
        self.num_active += 1
        self.max_active = max(self.max_active, self.num_active)
        try:
            await self.released.wait()
            async for chunk in super().Decode(request, context):
                yield chunk
        finally:
            self.num_active -= 1


async def until(predicate, what: str) -> None:  # noqa: ANN001
    for _ in range(500):  # a guard against a hang (5 s)
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_generate_beyond_the_admission_bound_is_refused_at_once_with_a_hint(host_factory):
    decode = HeldDecode()
    client = await start_router(
        host_factory, [FakePrefill()], [decode], admission_max_inflight=2, admission_max_wait_s=0.0
    )
    held = [asyncio.ensure_future(client.complete(token_ids=[1], max_tokens=6)) for _ in range(2)]
    try:
        await until(lambda: decode.num_streams == 2, "the two admitted reach the decode worker")
        shed = await asyncio.gather(
            *(client.complete(token_ids=[1], max_tokens=6) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(err, ResourceExhaustedError) for err in shed), shed
        # refused while both slots are still taken: none came free, so none of these waited for one
        assert not any(call.done() for call in held) and decode.num_streams == 2
    finally:
        decode.released.set()
        done = await asyncio.gather(*held, return_exceptions=True)
    assert all(err.retry_after_s == 1.0 and "overloaded" in err.message for err in shed)
    assert [len(r.token_ids) for r in done] == [6, 6], done
    assert len((await client.complete(token_ids=[1], max_tokens=2)).token_ids) == 2  # slots came back
    await client.close()


class SerialPrefill(FakePrefill):
    """Serves one prompt at a time, 0.1 s each: a burst queues for its first tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = asyncio.Lock()

    async def Prefill(self, request, context):  # noqa: N802
        async with self.lock:
            await asyncio.sleep(0.1)
            return await super().Prefill(request, context)


async def test_a_request_expected_to_wait_past_the_first_token_bound_is_refused_at_once(host_factory):
    prefill = SerialPrefill()
    client = await start_router(host_factory, [prefill], [SlowDecode()], max_queue_delay_s=0.25)
    await client.complete(token_ids=[1], max_tokens=2)  # alone: the router learns >= 0.1 s per start
    results = await asyncio.gather(
        *(client.complete(token_ids=[1], max_tokens=2) for _ in range(8)), return_exceptions=True
    )
    shed = [r for r in results if isinstance(r, ResourceExhaustedError)]
    done = [r for r in results if not isinstance(r, BaseException)]
    # 0.25 s / 0.1 s: about 3 fit (fewer on a slow host, where one start takes longer)
    assert len(shed) + len(done) == 8 and 1 <= len(done) <= 5, results
    assert all("first token" in e.message and e.retry_after_s >= 0.5 for e in shed)
    assert prefill.calls == 1 + len(done)  # the refused never reached a worker
    await client.close()


async def test_time_waited_in_front_of_the_router_counts_against_the_first_token_bound(host_factory):
    prefill = FakePrefill()
    client = await start_router(host_factory, [prefill], [SlowDecode()], max_queue_delay_s=0.25)
    assert len((await client.complete(token_ids=[1], max_tokens=2, queued_s=0.2)).token_ids) == 2
    with pytest.raises(ResourceExhaustedError, match="first token 0.30s"):
        await client.complete(token_ids=[1], max_tokens=2, queued_s=0.3)  # a gateway held it 0.3 s
    assert prefill.calls == 1
    await client.close()


async def test_a_short_queue_wait_admits_what_frees_in_time(host_factory):
    hosts = []

    async def recorded(settings, build):  # noqa: ANN001, ANN202
        hosts.append(await host_factory(settings, build))
        return hosts[-1]

    decode = HeldDecode()
    client = await start_router(
        recorded, [FakePrefill()], [decode], admission_max_inflight=1, admission_max_wait_s=5.0
    )
    gate = hosts[-1].guard.gates[GENERATE]  # the router's
    calls = [asyncio.ensure_future(client.complete(token_ids=[1], max_tokens=3)) for _ in range(3)]
    try:
        await until(lambda: decode.num_streams == 1 and gate.num_waiting == 2, "one admitted, two waiting")
    finally:
        decode.released.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert [len(r.token_ids) for r in results] == [3, 3, 3], results
    assert decode.max_active == 1  # one slot: the waiters were served one after another
    await client.close()


async def test_a_reused_request_id_does_not_collide_and_comes_back_unchanged(host_factory):
    decode = SlowDecode()
    client = await start_router(host_factory, [FakePrefill()], [decode])
    results = await asyncio.gather(
        *(client.complete(token_ids=[1], max_tokens=4, request_id="same-id") for _ in range(3))
    )
    assert [r.request_id for r in results] == ["same-id"] * 3
    assert len(set(decode.reserved)) == 3 and all(r.startswith("same-id.") for r in decode.reserved)
    await client.close()


async def test_an_upload_passes_the_same_admission_bound_as_generate(host_factory):
    decode = HeldDecode()
    client = await start_router(
        host_factory, [FakePrefill()], [decode], admission_max_inflight=2, admission_max_wait_s=0.0
    )
    # Many chunks: a refused client is still sending when the refusal comes, and must still see it.
    upload = [[1]] * 500
    held = [
        asyncio.ensure_future(client.complete(None, prompt_chunks=upload, max_tokens=6)),
        asyncio.ensure_future(client.complete(token_ids=[1], max_tokens=6)),
    ]
    try:
        await until(lambda: decode.num_streams == 2, "an upload and a generate hold the two slots")
        shed = await asyncio.gather(
            *(client.complete(None, prompt_chunks=upload, max_tokens=6) for _ in range(2)),
            *(client.complete(token_ids=[1], max_tokens=6) for _ in range(2)),
            return_exceptions=True,
        )
        assert all(isinstance(err, ResourceExhaustedError) for err in shed), shed  # one bound over both
        assert not any(call.done() for call in held)  # refused while both slots were taken
    finally:
        decode.released.set()
        done = await asyncio.gather(*held, return_exceptions=True)
    assert all(err.retry_after_s == 1.0 and "overloaded" in err.message for err in shed)
    assert [len(r.token_ids) for r in done] == [6, 6], done
    assert len((await client.complete(None, prompt_chunks=[[1]], max_tokens=2)).token_ids) == 2
    await client.close()


async def test_an_upload_waited_on_in_front_of_the_router_meets_the_first_token_bound(host_factory):
    prefill = FakePrefill()
    client = await start_router(host_factory, [prefill], [SlowDecode()], max_queue_delay_s=0.25)
    assert len((await client.complete(None, prompt_chunks=[[1]], max_tokens=2, queued_s=0.2)).token_ids) == 2
    with pytest.raises(ResourceExhaustedError, match="first token 0.30s"):
        await client.complete(None, prompt_chunks=[[1]] * 500, max_tokens=2, queued_s=0.3)
    assert prefill.calls == 1
    await client.close()


async def test_a_reused_request_id_on_uploads_does_not_collide_and_comes_back_unchanged(host_factory):
    decode = SlowDecode()
    client = await start_router(host_factory, [FakePrefill()], [decode])
    results = await asyncio.gather(
        *(client.complete(None, prompt_chunks=[[1]], max_tokens=4, request_id="same-id") for _ in range(3))
    )
    assert [r.request_id for r in results] == ["same-id"] * 3
    assert len(set(decode.reserved)) == 3 and all(r.startswith("same-id.") for r in decode.reserved)
    with pytest.raises(InvalidArgumentError) as err:
        await client.complete(None, prompt_chunks=[[1]] * 500, max_tokens=2, request_id="x" * 129)
    assert err.value.field == "request_id" and "at most 128 characters" in err.value.message
    await client.close()


async def test_request_id_is_length_and_charset_limited(host_factory):
    client = await start_router(host_factory, [FakePrefill()], [FakeDecode()])
    with pytest.raises(InvalidArgumentError) as err:
        await client.complete(token_ids=[1], max_tokens=2, request_id="x" * 129)
    assert err.value.field == "request_id" and "at most 128 characters" in err.value.message
    with pytest.raises(InvalidArgumentError) as err:
        await client.complete(token_ids=[1], max_tokens=2, request_id="a b\n")
    assert err.value.field == "request_id"
    await client.close()


async def test_malformed_protobuf_is_invalid_argument_without_internals(host_factory):
    client = await start_router(host_factory, [FakePrefill()], [FakeDecode()])
    async with grpc.aio.insecure_channel(client.target) as channel:
        generate = channel.unary_stream("/supernode.v1.Router/Generate")  # raw bytes in and out
        call = generate(b"\xff\xff\xff\xff\x0f garbage")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "request: not a valid Generate request message"
        assert (ORIGIN_KEY, "supernode") in tuple(err.value.trailing_metadata() or ())
        status = channel.unary_unary("/supernode.v1.Router/Status")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await status(b"\x0a\xff")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await client.close()


async def test_shed_carries_the_retry_trailer(host_factory):
    decode = HeldDecode()
    client = await start_router(
        host_factory, [FakePrefill()], [decode], admission_max_inflight=1, admission_max_wait_s=0.0
    )
    first = asyncio.ensure_future(client.complete(token_ids=[1], max_tokens=8))
    try:
        await until(lambda: decode.num_streams == 1, "the first request holds the one slot")
        async with grpc.aio.insecure_channel(client.target) as channel:
            from supernode.v1 import router_pb2, router_pb2_grpc

            call = router_pb2_grpc.RouterStub(channel).Generate(
                router_pb2.GenerateRequest(token_ids=[1], max_tokens=2),
                timeout=10,  # against a hang
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (RETRY_AFTER_KEY, "1") in tuple(err.value.trailing_metadata() or ())
    finally:
        decode.released.set()
    assert len((await first).token_ids) == 8
    await client.close()


async def test_generic_errors_reach_no_client_with_internals():
    from supernode.runtime.errors import sanitize

    leaky = (
        "redis unreachable: Error 111 connecting to 127.0.0.1:6379. Connection refused. "
        "redis.exceptions.ConnectionError: redis://10.0.0.5:6379/0 kvpool:50052 [::1]:50070 "
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:50060: refused "
        "in /work/x/services/supernode/kvpool/store.py, line 110 <class 'TimeoutError'>"
    )
    clean = sanitize(leaky)
    for secret in ("127.0.0.1", "6379", "10.0.0.5", "kvpool:50052", "::1", "50060", "ConnectionError",
                   "redis.exceptions", "store.py", "TimeoutError", "<class"):  # fmt: skip
        assert secret not in clean, clean
    assert clean.startswith("redis unreachable: Error 111 connecting to <internal>")
    kept = "max_tokens: must be between 1 and 32768"
    assert sanitize(kept) == kept
    assert sanitize("path down: ub/die17/tx, rdma/die3/rx") == "path down: ub/die17/tx, rdma/die3/rx"
    assert sanitize("transfers[1].dst.index: bad") == "transfers[1].dst.index: bad"


async def test_a_call_past_its_client_deadline_is_counted(host_factory):
    from prometheus_client import REGISTRY

    def expired() -> float:
        return REGISTRY.get_sample_value("supernode_deadline_expired_total", {"where": "Generate"}) or 0.0

    before = expired()
    client = await start_router(host_factory, [FakePrefill()], [SlowDecode()])
    with pytest.raises(Exception):  # noqa: B017 - the SDK's DeadlineExceededError
        await client.complete(token_ids=[1], max_tokens=40, timeout_s=0.3)
    for _ in range(50):
        if expired() > before:
            break
        await asyncio.sleep(0.02)
    assert expired() == before + 1
    await client.close()
