"""The pool's batched calls on a real server: LookupMany over shared prefixes, per-block Put answers,
and the batching client that turns a step's worth of calls into one RPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from supernode.core import blocks
from supernode.kvpool.service import build
from supernode.kvpool.store import MemoryKvStore, RedisKvStore
from supernode.runtime.channels import open_channel
from supernode.runtime.peers import PoolBlock
from supernode.runtime.pool_batch import BatchingPool
from supernode.runtime.pool_clients import PoolClients
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc
from tests.conftest import make_settings

BLOCK = 16


@pytest.fixture(params=["memory", "redis"])
async def served(request, host_factory, redis_url):
    namespace = f"b{request.node.name.__hash__() & 0xFFFF:x}{request.param}"
    settings = make_settings(
        kvpool={
            "block_tokens": BLOCK,
            "namespace": namespace,
            "redis_url": redis_url,
            "max_blocks_per_call": 8,
        }
    )
    store = MemoryKvStore() if request.param == "memory" else RedisKvStore(redis_url)
    host = await host_factory(settings, build(settings, store))
    return host.address, make_settings(
        kvpool={
            "block_tokens": BLOCK,
            "namespace": namespace,
            "address": host.address,
            "max_blocks_per_call": 8,
        }
    )


def _pool_blocks(tokens: list[int]) -> list[PoolBlock]:
    keys = blocks.block_keys(tokens, BLOCK)
    return [PoolBlock(k, t) for k, t in zip(keys, blocks.split_blocks(tokens, BLOCK), strict=True)]


async def test_lookup_many_answers_each_prefix(served) -> None:
    address, settings = served
    shared = list(range(500, 500 + 2 * BLOCK))
    a, b = _pool_blocks(shared + [1] * BLOCK), _pool_blocks(shared + [2] * BLOCK)
    channel = open_channel(address, settings)
    stub = kvpool_pb2_grpc.KvPoolStub(channel)
    put = await stub.Put(
        kvpool_pb2.PutRequest(blocks=[kvpool_pb2.Block(key=x.key, tokens=x.tokens) for x in a])
    )
    assert list(put.stored) == [True, True, True]
    prefixes = [[x.key for x in a], [x.key for x in b], []]
    reply = await stub.LookupMany(
        kvpool_pb2.LookupManyRequest(prefixes=[kvpool_pb2.LookupRequest(block_keys=p) for p in prefixes])
    )
    assert list(reply.num_cached_blocks) == [3, 2, 0]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        bad = [kvpool_pb2.LookupRequest(block_keys=["nothex"])]
        await stub.LookupMany(kvpool_pb2.LookupManyRequest(prefixes=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prefixes[0].block_keys[0]" in (err.value.details() or "")
    await channel.close()


async def test_batching_pool_sends_one_rpc_per_turn(served) -> None:
    _, settings = served
    pool = BatchingPool(PoolClients(settings), settings.kvpool.max_blocks_per_call)
    prompts = [[7] * BLOCK + [i] * BLOCK for i in range(4)]  # a shared first block, 2 blocks each
    stored = await asyncio.gather(*(pool.put(_pool_blocks(p)) for p in prompts))
    # The first store of the shared block wins; 8 blocks fit one call of max_blocks_per_call = 8.
    assert stored == [2, 1, 1, 1] and pool.stores.num_calls == 1
    keys = [[b.key for b in _pool_blocks(p + [9] * BLOCK)] for p in prompts]
    runs = await asyncio.gather(*(pool.lookup(k) for k in keys))
    assert runs == [2, 2, 2, 2]
    assert pool.lookups.num_calls == 2, "12 keys: two batches under the 8-block bound"
    await pool.close()
