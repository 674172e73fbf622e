"""The in-process cluster runs the real engines end to end on a virtual clock."""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Sequence

import pytest

from supernode.core import tokens
from supernode.core.request import RequestStatus, Sampling
from supernode.inproc import ClusterShape, InprocCluster
from supernode.runtime.clock import VirtualClock
from supernode.runtime.errors import InvalidArgumentError, UnavailableError
from supernode.runtime.peers import PoolRead
from tests.conftest import make_settings

SMALL = ClusterShape(num_prefill=2, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**12)


async def test_requests_get_their_deterministic_tokens_and_stats():
    clock = VirtualClock(start=5.0)
    async with InprocCluster(make_settings(), clock, SMALL) as cluster:
        prompt = [300 + i % 97 for i in range(700)]
        request = cluster.router.make_request("a", "", prompt, 6, Sampling(seed=3))
        out = [t async for chunk in cluster.generate(request) for t in chunk.token_ids]
        model = tokens.TokenModel(prompt, 3)
        assert out == model.generate(6), "the same tokens a fault-free live stack gives"
        assert request.status is RequestStatus.FINISHED and request.finish_reason == "length"
        assert request.ttft_s > 0 and request.tpot_s > 0 and request.kv_pull_s > 0
        again = cluster.router.make_request("b", "", prompt, 2, Sampling(seed=3))
        [c async for c in cluster.generate(again)]
        assert again.num_cached_tokens == 640, "five full blocks came from the pool"
        assert cluster.decodes[0].scheduler.kv_reserved == [0, 0]


async def test_a_32_bit_array_prompt_runs_as_its_list_does():
    """The load generator sends prompts as array('i'): the router keeps them as 32-bit arrays, and
    every figure and token comes out as for the same prompt given as a list."""
    prompt = [300 + i % 97 for i in range(700)]

    async def run(given: Sequence[int]) -> tuple[list[int], float, float, int]:
        async with InprocCluster(make_settings(), VirtualClock(), SMALL, materialise_tokens=True) as c:
            first = c.router.make_request("a", "", given, 6, Sampling(seed=3))
            out = [t async for chunk in c.generate(first) for t in chunk.token_ids]
            again = c.router.make_request("b", "", given, 2, Sampling(seed=3))
            [chunk async for chunk in c.generate(again)]
            return out, first.ttft_s, first.e2e_s, again.num_cached_tokens

    request = InprocCluster(make_settings(), VirtualClock(), SMALL).router.make_request(
        "a", "", array("i", prompt), 6, Sampling(seed=3)
    )
    assert tokens.is_uint32_array(request.prompt) and list(request.prompt) == prompt
    assert await run(array("i", prompt)) == await run(prompt)
    with pytest.raises(InvalidArgumentError, match="token_ids"):
        InprocCluster(make_settings(), VirtualClock(), SMALL).router.make_request(
            "c", "", array("i", [5, tokens.VOCAB_SIZE]), 6, Sampling(seed=3)
        )


@pytest.mark.parametrize("policy", ["paper", "round_robin", "kv_aware"])
async def test_only_the_kv_aware_policy_remembers_prefixes(policy: str):
    settings = make_settings()
    settings.router.policy = policy  # type: ignore[assignment]
    async with InprocCluster(settings, VirtualClock(), SMALL) as c:
        for i in range(3):
            r = c.router.make_request(f"r{i}", "", [400 + i + j for j in range(200)], 2, Sampling(seed=1))
            [chunk async for chunk in c.generate(r)]
        assert len(c.router.calls.affinity) == (3 if policy == "kv_aware" else 0)


async def test_the_kv_store_moves_in_the_background_and_a_failed_one_is_only_logged(caplog):
    async with InprocCluster(make_settings(), VirtualClock(), SMALL) as c:
        r = c.router.make_request("a", "", [400 + j for j in range(300)], 2, Sampling(seed=1))
        [chunk async for chunk in c.generate(r)]
        await asyncio.sleep(0.01)
        assert c.fabric.bytes_by_tag["kv-store"] == 300 * 70_272
        assert not any(p._stores for p in c.prefills), "each store is forgotten once it has moved"

        def refused(*_: object) -> asyncio.Future[object]:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            future.set_exception(UnavailableError("path down: test"))
            return future

        # a transfer that cannot even be routed fails its future, as the task it replaces did
        unroutable = c.fabric.start_transfer(("die", 0), ("cpu", 10**6), 1, "ub", "kv-store")
        assert unroutable.done() and unroutable.exception() is not None

        c.fabric.start_transfer = refused
        caplog.set_level("DEBUG", logger="supernode.prefill.engine")
        r = c.router.make_request("b", "", [900 + j for j in range(300)], 2, Sampling(seed=1))
        [chunk async for chunk in c.generate(r)]
        await asyncio.sleep(0)
        assert r.status is RequestStatus.FINISHED
        assert not any(p._stores for p in c.prefills)
        assert "background KV store transfer failed: path down: test" in caplog.text


async def test_counting_only_gives_the_same_timing():
    async def run(materialise: bool) -> tuple[float, float, int]:
        async with InprocCluster(make_settings(), VirtualClock(), SMALL, materialise_tokens=materialise) as c:
            r = c.router.make_request("x", "", [400 + i for i in range(300)], 20, Sampling(seed=1))
            [chunk async for chunk in c.generate(r)]
            return r.ttft_s, r.e2e_s, r.num_generated

    counted, full = await run(False), await run(True)
    assert counted[2] == full[2] == 20
    assert counted[0] == pytest.approx(full[0]) and counted[1] == pytest.approx(full[1])


@pytest.mark.parametrize("materialise", [True, False])
async def test_kv_gone_before_decode_is_recomputed_whether_tokens_are_drawn_or_counted(materialise: bool):
    """Decode reads the prompt's blocks (counting only: their presence, digests and counts, no ids);
    a block gone from the pool is a FAILED_PRECONDITION the router answers with one recompute."""
    async with InprocCluster(make_settings(), VirtualClock(), SMALL, materialise_tokens=materialise) as c:
        pool, real_get = c.pool, c.pool.get
        num_dropped: list[str] = []

        async def get_after_an_eviction(keys: Sequence[str]) -> PoolRead:
            """The first read finds its last block evicted."""
            if not num_dropped:
                await pool.store.delete(pool.namespace, keys[-1])
                num_dropped.append(keys[-1])
            return await real_get(keys)

        c.decodes[0].pool.get = get_after_an_eviction  # type: ignore[method-assign]
        r = c.router.make_request("x", "", [400 + i for i in range(300)], 8, Sampling(seed=1))
        [chunk async for chunk in c.generate(r)]
        assert num_dropped and r.num_prefills == 2 and r.num_generated == 8
        assert r.status is RequestStatus.FINISHED


async def test_the_first_token_goes_out_before_the_prompt_is_stored_and_decode_waits_for_it():
    async with InprocCluster(make_settings(), VirtualClock(start=5.0), SMALL) as cluster:
        entered, release = asyncio.Event(), asyncio.Event()
        put = cluster.pool.put

        async def held_put(blocks):  # the prefill's store of the prompt's new blocks, held
            entered.set()
            await release.wait()
            return await put(blocks)

        cluster.pool.put = held_put
        prompt = [300 + i % 97 for i in range(700)]
        request = cluster.router.make_request("a", "", prompt, 6, Sampling(seed=3))
        chunks = cluster.generate(request)
        first = await asyncio.wait_for(anext(chunks), 10)
        assert first.token_ids == [tokens.TokenModel(prompt, 3).next_token()]
        assert entered.is_set() and request.status is RequestStatus.PREFILLING and request.kv is None
        assert request.ttft_s > 0
        release.set()
        rest = [chunk async for chunk in chunks]
        assert sum(c.num_tokens for c in rest) == 5 and request.status is RequestStatus.FINISHED
        assert request.kv_pull_s > 0, "decode pulled the KV once it was stored"


async def test_a_prefill_that_fails_after_its_first_token_is_retried_without_sending_it_twice():
    async with InprocCluster(make_settings(), VirtualClock(start=5.0), SMALL) as cluster:
        put = cluster.pool.put
        failures = []

        async def failing_once(blocks):  # the first instance's store fails after its token went out
            if not failures:
                failures.append(True)
                raise UnavailableError("kv pool: redis unreachable")
            return await put(blocks)

        cluster.pool.put = failing_once
        prompt = [300 + i % 97 for i in range(700)]
        request = cluster.router.make_request("a", "", prompt, 6, Sampling(seed=3))
        chunks = [chunk async for chunk in cluster.generate(request)]
        assert failures, "the first store failed"
        assert chunks[0].token_ids == [tokens.TokenModel(prompt, 3).next_token()]
        assert sum(c.num_tokens for c in chunks) == 6 and request.status is RequestStatus.FINISHED
        assert request.num_prefills == 1 and request.prefill_worker == cluster.prefills[1].worker_id
