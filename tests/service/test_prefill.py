"""The prefill service in-process on a virtual clock: batching, context caching, bounds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from supernode.core import blocks, tokens
from supernode.core.request import Sampling
from supernode.hw import cost as hw_cost
from supernode.inproc import InprocFabric
from supernode.kvpool.local import LocalPool
from supernode.prefill.engine import PrefillEngine
from supernode.runtime.clock import VirtualClock
from supernode.runtime.deployments import prefill_deployment
from supernode.v1 import common_pb2, prefill_pb2
from tests.conftest import make_settings


@pytest.fixture
def make_prefill(prefill_stack):
    async def start(**prefill):
        stub, engine, fabric, pool = await prefill_stack(**prefill)
        return stub, engine, fabric

    return start


def request(rid: str, prompt: list[int], seed: int = 0) -> prefill_pb2.PrefillRequest:
    return prefill_pb2.PrefillRequest(
        request_id=rid, token_ids=prompt, sampling=common_pb2.Sampling(seed=seed)
    )


async def test_every_prompt_token_is_computed_once(make_prefill):
    stub, service, _ = await make_prefill(num_npus=1, tokens_per_npu=16384)
    prompts = [[1000 + i] * 4096 for i in range(4)]
    replies = await asyncio.gather(*(stub.Prefill(request(f"r{i}", p)) for i, p in enumerate(prompts)))
    # Arrival order decides how they batch (the pure scheduler's tests pin that down); here every token
    # is computed exactly once and each reply's compute time is at least its own batch's.
    assert service.metrics.tokens.labels(service.worker_id)._value.get() == 4 * 4096
    assert 1 <= service.loop.stats.num_steps <= 4
    dep = prefill_deployment(service.cfg)
    alone = hw_cost.prefill_batch_cost(dep, [4096], [0]).total_us / 1e6
    assert all(r.compute_s >= alone * (1 - 1e-9) for r in replies)
    for r, p in zip(replies, prompts, strict=True):
        assert r.first_token == tokens.TokenModel(p, 0).next_token()
        assert r.kv.num_tokens == 4096 and len(r.kv.block_keys) == 32


async def test_long_prompt_is_chunked_across_batches(make_prefill):
    stub, service, _ = await make_prefill(num_npus=1, tokens_per_npu=1024)
    reply = await stub.Prefill(request("long", list(range(300, 300 + 3000))))
    assert service.loop.stats.num_steps == 3
    dep = prefill_deployment(service.cfg)
    # Only the last chunk runs the vocabulary projection for the first output token.
    expected = (
        sum(
            hw_cost.prefill_batch_cost(dep, [n], [c], lm_head_tokens=[h]).total_us
            for n, c, h in ((1024, 0, 0), (1024, 1024, 0), (952, 2048, 1))
        )
        / 1e6
    )
    assert reply.compute_s == pytest.approx(expected, rel=1e-6)


async def test_cached_prefix_is_loaded_not_computed(make_prefill):
    stub, service, fabric = await make_prefill(num_npus=1)
    prefix = [700 + (i % 50) for i in range(16384)]
    cold = await stub.Prefill(request("cold", prefix + [1, 2, 3]))
    warm = await stub.Prefill(request("warm", prefix + [4, 5, 6, 7]))
    assert cold.num_cached_tokens == 0 and cold.load_s == 0
    assert warm.num_cached_tokens == 16384 and warm.load_s > 0
    assert warm.compute_s < cold.compute_s
    assert fabric.bytes_by_tag["kv-load"] == 16384 * 70_272
    # the cold prompt's blocks moved to the pool, then the warm prompt's last (new) block
    assert fabric.bytes_by_tag["kv-store"] == (16387 + 4) * 70_272
    assert service.cache_metrics.hit_rate._value.get() == pytest.approx(16384 / (16387 + 16388))


async def test_fully_cached_prompt_still_computes_its_last_token(make_prefill):
    stub, _, _ = await make_prefill(num_npus=1)
    prompt = [900] * 256
    await stub.Prefill(request("a", prompt))
    again = await stub.Prefill(request("b", prompt))
    assert again.num_cached_tokens == 255


async def test_bad_input_and_full_queue(make_prefill):
    stub, service, _ = await make_prefill(num_npus=1, max_queue=1)
    for bad, field in (
        (request("", [1]), "request_id"),
        (request("x", []), "token_ids"),
        (request("x", [tokens.VOCAB_SIZE]), "token_ids"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Prefill(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
    # Six arrive at one emulated instant: one is computed, one waits, the rest find the queue full.
    with service.clock.held():
        calls = [asyncio.ensure_future(stub.Prefill(request(f"q{i}", [300 + i] * 512))) for i in range(6)]
        for _ in range(500):  # until the refused have their answers (each call crosses a socket)
            if sum(c.done() for c in calls) >= 4:
                break
            await asyncio.sleep(0.01)
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert refused, "a full queue must refuse"
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all(dict(r.trailing_metadata() or ()).get("retry-after-s") == "0.5" for r in refused)
    assert any(isinstance(r, prefill_pb2.PrefillResponse) for r in results)


def hold_puts(pool) -> tuple[asyncio.Event, asyncio.Event]:
    """Holds the pool's block writes until `release` is set; `entered` is set when one starts."""
    entered, release = asyncio.Event(), asyncio.Event()
    put = pool.put

    async def held(blocks):
        entered.set()
        await release.wait()
        return await put(blocks)

    pool.put = held
    return entered, release


async def test_stream_sends_the_first_token_before_the_blocks_are_stored(prefill_stack):
    stub, _, _, pool = await prefill_stack(num_npus=1)
    entered, release = hold_puts(pool)
    prompt = [500 + i % 13 for i in range(512)]
    call = stub.PrefillStream(request("s", prompt, seed=4))
    first = await asyncio.wait_for(call.read(), 10)  # sent when its batch started
    assert first.WhichOneof("event") == "first_token"
    assert first.first_token == tokens.TokenModel(prompt, 4).next_token()
    keys = blocks.block_keys(prompt, 128)
    await asyncio.wait_for(entered.wait(), 10)  # the batch ended and the store began: it is held
    assert await pool.lookup(keys) == 0, "the store is still held"
    release.set()
    last = await call.read()
    assert last.WhichOneof("event") == "response"
    assert last.response.first_token == first.first_token and len(last.response.kv.block_keys) == 4
    assert list(last.response.kv.block_keys) == keys
    assert await pool.lookup(keys) == 4, "stored before the response"
    assert await call.read() is grpc.aio.EOF


async def test_without_early_offers_the_first_token_comes_at_its_batch_end_before_the_store():
    """Virtual time's prefill (`early_first` off): the token is offered once computed, due now, and
    the blocks are stored after."""
    settings = make_settings(prefill={"metrics_port": 0, "num_npus": 1})
    clock = VirtualClock(start=10.0)
    fabric, pool = InprocFabric(clock), LocalPool()
    fabric.start()
    engine = PrefillEngine(settings, clock, fabric, pool, heartbeat=False, early_first=False)
    await engine.start()
    try:
        entered, release = hold_puts(pool)
        prompt = [500 + i % 13 for i in range(512)]
        offers: list[tuple[int, float, float]] = []
        call = asyncio.ensure_future(engine.prefill(
            "s", prompt, Sampling(seed=4), lambda token, due: offers.append((token, due, clock.now()))
        ))  # fmt: skip
        await asyncio.wait_for(entered.wait(), 10)
        assert len(offers) == 1, "offered before the store began"
        token, due, at = offers[0]
        assert token == tokens.TokenModel(prompt, 4).next_token() and due == 0.0
        release.set()
        result = await call
        assert abs(at - (10.0 + result.compute_s)) < 1e-9, "at the batch's end"
    finally:
        await engine.stop()
        await fabric.stop()


async def test_the_first_token_is_sent_when_its_batch_starts_due_when_it_ends(make_prefill):
    """The host's way back to the router is not added to the token's time: the token leaves while its
    batch runs (time stands still here, so the batch cannot end before it is read), due at the end."""
    stub, engine, _ = await make_prefill(num_npus=1)
    clock = engine.clock
    prompt = [700 + i % 11 for i in range(1000)]
    with clock.held():
        start = clock.now()
        call = stub.PrefillStream(request("e", prompt, seed=3))
        first = await asyncio.wait_for(call.read(), 10)
        assert clock.now() == start, "read before the batch ended"
    assert first.first_token == tokens.TokenModel(prompt, 3).next_token()
    last = await call.read()
    assert last.response.compute_s > 0
    assert abs(first.first_token_due_s - (start + last.response.compute_s)) < 1e-9


async def test_stream_refuses_bad_input_by_field(make_prefill):
    stub, _, _ = await make_prefill(num_npus=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PrefillStream(request("x", [tokens.VOCAB_SIZE])).read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "token_ids" in err.value.details()


async def test_the_hosts_work_since_the_router_sent_it_is_not_emulated_time(prefill_stack):
    """`sent_s`: a prompt sent 2 ms (emulated) before the idle worker had it computes from then; a
    `sent_s` in the future (another host's clock ahead) or unset counts from its arrival. Timed on the
    worker's records (its arrival to its batch's end), as the virtual clock may move while a call is
    on the socket."""
    stub, engine, _, _ = await prefill_stack(num_npus=1)
    clock, added = engine.clock, {}
    add = engine.scheduler.add

    def recording_add(req):
        added[req.request_id] = req
        return add(req)

    engine.scheduler.add = recording_add

    async def elapsed(rid: str, sent_before_s: float | None) -> tuple[float, float]:
        await clock.sleep(1.0)  # the worker is idle
        req = request(rid, [600 + ord(rid[0])] * 512)  # no prompt cached: no load on the path
        if sent_before_s is not None:
            req.sent_s = clock.now() - sent_before_s
        with clock.held():  # the call reaches the worker at the instant it was sent
            call = asyncio.ensure_future(stub.Prefill(req))
            for _ in range(500):
                if rid in added:
                    break
                await asyncio.sleep(0.01)
        reply = await call
        record = added[rid]
        return record.finished_s - record.arrival_s, reply.compute_s

    took, compute = await elapsed("unset", None)
    assert abs(took - compute) < 1e-9
    took, compute = await elapsed("sent", 0.002)
    assert abs(took - (compute - 0.002)) < 1e-9
    took, compute = await elapsed("ahead", -5.0)
    assert abs(took - compute) < 1e-9
