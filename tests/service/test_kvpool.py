"""The KV pool service over every store: the in-memory fake, a real redis-server, a real Redis Cluster."""

from __future__ import annotations

import grpc
import pytest
import redis.asyncio as aioredis

from supernode.core import blocks
from supernode.kvpool import streamed
from supernode.kvpool.cluster_store import ClusterKvStore
from supernode.kvpool.service import build
from supernode.kvpool.store import MemoryKvStore, RedisKvStore, redis_key
from supernode.runtime.channels import open_channel
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc
from tests.conftest import make_settings

BLOCK = 16


@pytest.fixture(params=["memory", "redis", "cluster"])
async def pool(request, host_factory, redis_url):
    namespace = f"t{request.node.name.__hash__() & 0xFFFF:x}{request.param}"
    url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_url
    settings = make_settings(kvpool={"block_tokens": BLOCK, "namespace": namespace, "redis_url": url})
    stores = {
        "memory": MemoryKvStore,
        "redis": lambda: RedisKvStore(url),
        "cluster": lambda: ClusterKvStore(url),
    }
    host = await host_factory(settings, build(settings, stores[request.param]()))
    channel = open_channel(host.address, settings)
    yield kvpool_pb2_grpc.KvPoolStub(channel), namespace, request.param
    await channel.close()


def raw_client(kind: str, url: str) -> aioredis.Redis | aioredis.RedisCluster:
    return aioredis.RedisCluster.from_url(url) if kind == "cluster" else aioredis.Redis.from_url(url)


def _blocks(tokens):
    keys = blocks.block_keys(tokens, BLOCK)
    return [
        kvpool_pb2.Block(key=k, tokens=t)
        for k, t in zip(keys, blocks.split_blocks(tokens, BLOCK), strict=True)
    ]


async def test_put_lookup_get_roundtrip(pool):
    stub, ns, _ = pool
    prompt = list(range(1000, 1000 + 3 * BLOCK + 5))
    all_blocks = _blocks(prompt)
    put = await stub.Put(kvpool_pb2.PutRequest(blocks=all_blocks[:2]))
    assert put.num_stored == 2 and put.payload_bytes > 0
    again = await stub.Put(kvpool_pb2.PutRequest(blocks=all_blocks[:2]))
    assert again.num_stored == 0 and again.num_already_cached == 2, "content-addressed: stored once"
    keys = [b.key for b in all_blocks]
    assert (await stub.Lookup(kvpool_pb2.LookupRequest(block_keys=keys))).num_cached_blocks == 2
    got = await stub.Get(kvpool_pb2.GetRequest(block_keys=keys, with_payload=True))
    assert [b.key for b in got.blocks] == keys[:2]
    assert list(got.missing_keys) == keys[2:]
    assert [list(b.tokens) for b in got.blocks] == [prompt[:BLOCK], prompt[BLOCK : 2 * BLOCK]]
    assert got.blocks[0].payload.startswith(blocks.MAGIC)
    stats = await stub.Stats(kvpool_pb2.StatsRequest())
    assert stats.num_keys == 2 and stats.num_hits >= 4 and stats.num_misses >= 2


async def test_lookup_counts_only_the_leading_run(pool):
    stub, _, _ = pool
    prompt = list(range(300, 300 + 4 * BLOCK))
    b = _blocks(prompt)
    await stub.Put(kvpool_pb2.PutRequest(blocks=[b[0], b[2]]))
    reply = await stub.Lookup(kvpool_pb2.LookupRequest(block_keys=[x.key for x in b]))
    assert reply.num_cached_blocks == 1


async def test_bad_input_is_invalid_argument(pool):
    stub, _, _ = pool
    cases = [
        (stub.Lookup, kvpool_pb2.LookupRequest(block_keys=["not-hex"]), "block_keys[0]"),
        (stub.Lookup, kvpool_pb2.LookupRequest(namespace="bad ns!", block_keys=[]), "namespace"),
        (
            stub.Put,
            kvpool_pb2.PutRequest(blocks=[kvpool_pb2.Block(key="a" * 32, tokens=[])]),
            "blocks[0].tokens",
        ),
        (
            stub.Put,
            kvpool_pb2.PutRequest(blocks=[kvpool_pb2.Block(key="a" * 32, tokens=[1] * (BLOCK + 1))]),
            "blocks[0].tokens",
        ),
    ]
    for rpc, request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    assert (await stub.Lookup(kvpool_pb2.LookupRequest(block_keys=[]))).num_cached_blocks == 0


async def _corrupt(
    request: pytest.FixtureRequest, kind: str, ns: str, key: str
) -> aioredis.Redis | aioredis.RedisCluster:
    """Flips the last byte of a stored (valid) block in Redis itself; returns the raw client."""
    url = (
        request.getfixturevalue("redis_cluster").url
        if kind == "cluster"
        else request.getfixturevalue("redis_url")
    )
    r = raw_client(kind, url)
    raw = await r.get(redis_key(ns, key))
    assert isinstance(raw, bytes)
    blocks.open_sealed(raw)  # stored intact
    await r.set(redis_key(ns, key), raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    return r


async def test_corrupt_block_is_detected_and_served_as_missing(pool, request):
    stub, ns, kind = pool
    if kind == "memory":
        pytest.skip("corrupts the stored bytes in Redis itself")
    b = _blocks(list(range(50, 50 + BLOCK)))
    await stub.Put(kvpool_pb2.PutRequest(blocks=b))
    r = await _corrupt(request, kind, ns, b[0].key)
    got = await stub.Get(kvpool_pb2.GetRequest(block_keys=[b[0].key]))
    assert list(got.missing_keys) == [b[0].key]
    assert (await stub.Stats(kvpool_pb2.StatsRequest())).num_digest_failures == 1
    await r.aclose()


async def test_redis_down_is_unavailable_not_a_crash(host_factory):
    settings = make_settings(kvpool={"redis_url": "redis://127.0.0.1:1/0"})

    class LateStore(RedisKvStore):
        async def ping(self) -> None:  # start even though Redis is away
            return None

    host = await host_factory(settings, build(settings, LateStore(settings.kvpool.redis_url)))
    channel = open_channel(host.address, settings)
    stub = kvpool_pb2_grpc.KvPoolStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Lookup(kvpool_pb2.LookupRequest(block_keys=["a" * 32]))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close()


async def test_pool_counters_are_prometheus_metrics(host_factory):
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    settings = make_settings(kvpool={"block_tokens": BLOCK, "namespace": "prom", "metrics_port": 0})
    host = await host_factory(settings, build(settings, MemoryKvStore()))
    channel = open_channel(host.address, settings)
    stub = kvpool_pb2_grpc.KvPoolStub(channel)
    b = _blocks(list(range(900, 900 + 2 * BLOCK)))
    await stub.Put(kvpool_pb2.PutRequest(blocks=b[:1]))
    await stub.Lookup(kvpool_pb2.LookupRequest(block_keys=[x.key for x in b]))
    await channel.close()
    samples = {
        (s.name, s.labels.get("namespace")): s.value
        for family in text_string_to_metric_families(generate_latest(host.service.registry).decode())
        for s in family.samples
    }
    assert samples[("supernode_kvpool_hits_total", "prom")] == 1
    assert samples[("supernode_kvpool_misses_total", "prom")] == 1
    assert samples[("supernode_kvpool_hit_rate", "prom")] == 0.5


async def test_get_stream_returns_what_get_returns_group_by_group(pool, monkeypatch):
    stub, _, _ = pool
    monkeypatch.setattr(streamed, "GROUP_BYTES", 1)  # one found block a group: several messages
    b = _blocks(list(range(2000, 2000 + 5 * BLOCK)))
    await stub.Put(kvpool_pb2.PutRequest(blocks=[b[0], b[1], b[3]]))
    keys = [x.key for x in b]
    for with_payload in (True, False):
        request = kvpool_pb2.GetRequest(block_keys=keys, with_payload=with_payload)
        unary = await stub.Get(request)
        messages = [m async for m in stub.GetStream(request)]
        # groups: [0] [1] [2] (a miss: the next group doubles) [3, 4]
        assert [len(m.blocks) + len(m.missing_keys) for m in messages] == [1, 1, 1, 2]
        assert [x.key for m in messages for x in m.blocks] == [keys[0], keys[1], keys[3]]
        assert [x.SerializeToString() for m in messages for x in m.blocks] == [
            x.SerializeToString() for x in unary.blocks
        ]
        assert [k for m in messages for k in m.missing_keys] == list(unary.missing_keys) == [keys[2], keys[4]]
        assert all(bool(x.payload) == with_payload for m in messages for x in m.blocks)
    assert [m async for m in stub.GetStream(kvpool_pb2.GetRequest())] == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GetStream(kvpool_pb2.GetRequest(block_keys=[keys[0], "nope"])):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "block_keys[1]" in err.value.details()


async def test_get_stream_serves_a_corrupt_block_as_missing(pool, request):
    stub, ns, kind = pool
    if kind == "memory":
        pytest.skip("corrupts the stored bytes in Redis itself")
    b = _blocks(list(range(70, 70 + 2 * BLOCK)))
    await stub.Put(kvpool_pb2.PutRequest(blocks=b))
    r = await _corrupt(request, kind, ns, b[1].key)
    messages = [m async for m in stub.GetStream(kvpool_pb2.GetRequest(block_keys=[x.key for x in b]))]
    assert [x.key for m in messages for x in m.blocks] == [b[0].key]
    assert [k for m in messages for k in m.missing_keys] == [b[1].key]
    assert (await stub.Stats(kvpool_pb2.StatsRequest())).num_digest_failures == 1
    assert await r.get(redis_key(ns, b[1].key)) is None, "the corrupt block was deleted"
    await r.aclose()


async def test_a_stream_cancelled_midway_leaves_the_pool_serving(pool, monkeypatch):
    stub, _, _ = pool
    monkeypatch.setattr(streamed, "GROUP_BYTES", 1)
    b = _blocks(list(range(3000, 3000 + 6 * BLOCK)))
    await stub.Put(kvpool_pb2.PutRequest(blocks=b))
    request = kvpool_pb2.GetRequest(block_keys=[x.key for x in b], with_payload=True)
    for _ in range(3):
        call = stub.GetStream(request)
        first = await call.read()
        assert [x.key for x in first.blocks] == [b[0].key]
        call.cancel()  # the reader goes away once the next group's read has been started
    got = await stub.Get(request)
    assert [x.key for x in got.blocks] == [x.key for x in b] and not got.missing_keys
    messages = [m async for m in stub.GetStream(request)]
    assert [x.key for m in messages for x in m.blocks] == [x.key for x in b]
