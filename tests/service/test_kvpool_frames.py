"""Large blocks on a real redis-server and a real Redis Cluster: `GetStream` sends each one-block message
from the frame the block was read into, the same bytes `Get` serves, and a corrupt one is still
served as missing and deleted."""

from __future__ import annotations

import pytest

from supernode.core import blocks
from supernode.kvpool import frames, streamed
from supernode.kvpool.cluster_store import ClusterKvStore
from supernode.kvpool.service import build
from supernode.kvpool.store import RedisKvStore, redis_key
from supernode.runtime.channels import open_channel
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc
from tests.conftest import make_settings
from tests.service.test_kvpool import raw_client

BLOCK = 16
RATIO = 0.5  # 16 tokens: ~560 KB values, larger than the direct reader's 256 KB chunk


@pytest.fixture(params=["redis", "cluster"])
async def pool(request, host_factory, redis_url, monkeypatch):
    namespace = f"f{request.node.name.__hash__() & 0xFFFF:x}{request.param}"
    url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_url
    settings = make_settings(
        kvpool={"block_tokens": BLOCK, "namespace": namespace, "redis_url": url, "payload_ratio": RATIO}
    )
    store = RedisKvStore(url) if request.param == "redis" else ClusterKvStore(url)
    host = await host_factory(settings, build(settings, store))
    assert frames.is_enabled(), "the service keeps freed memory, so it frames large blocks"
    framed: list[int] = []
    message = frames.message

    def counted(*args, **kwargs):
        out = message(*args, **kwargs)
        framed.append(out is not None)
        return out

    monkeypatch.setattr(frames, "message", counted)
    monkeypatch.setattr(streamed, "GROUP_BYTES", 1)  # one block a group: one-block messages
    channel = open_channel(host.address, settings)
    yield kvpool_pb2_grpc.KvPoolStub(channel), namespace, url, request.param, framed
    await channel.close()


def _blocks(first: int, n: int) -> list[kvpool_pb2.Block]:
    tokens = list(range(first, first + n * BLOCK))
    keys = blocks.block_keys(tokens, BLOCK)
    return [
        kvpool_pb2.Block(key=k, tokens=t)
        for k, t in zip(keys, blocks.split_blocks(tokens, BLOCK), strict=True)
    ]


async def test_large_blocks_stream_from_their_frames_as_get_serves_them(pool):
    stub, _, _, _, framed = pool
    b = _blocks(4000, 4)
    await stub.Put(kvpool_pb2.PutRequest(blocks=[b[0], b[1], b[3]]))
    request = kvpool_pb2.GetRequest(block_keys=[x.key for x in b], with_payload=True)
    unary = await stub.Get(request)
    assert len(unary.blocks) == 3 and len(unary.blocks[0].payload) > 256 * 1024
    framed.clear()
    messages = [m async for m in stub.GetStream(request)]
    assert framed == [True, True, True], "each found block was sent from its frame"
    got = [x for m in messages for x in m.blocks]
    assert [x.SerializeToString() for x in got] == [x.SerializeToString() for x in unary.blocks]
    assert [k for m in messages for k in m.missing_keys] == [b[2].key]
    again = [m async for m in stub.GetStream(request)]  # fresh frames: the first ones were sent
    assert again == messages


async def test_a_corrupt_large_block_is_served_as_missing_and_deleted(pool):
    stub, ns, url, kind, framed = pool
    b = _blocks(5000, 3)
    await stub.Put(kvpool_pb2.PutRequest(blocks=b))
    r = raw_client(kind, url)
    raw = await r.get(redis_key(ns, b[1].key))
    middle = len(raw) // 2
    await r.set(redis_key(ns, b[1].key), raw[:middle] + bytes([raw[middle] ^ 0x01]) + raw[middle + 1 :])
    framed.clear()
    request = kvpool_pb2.GetRequest(block_keys=[x.key for x in b], with_payload=True)
    messages = [m async for m in stub.GetStream(request)]
    assert [x.key for m in messages for x in m.blocks] == [b[0].key, b[2].key]
    assert [k for m in messages for k in m.missing_keys] == [b[1].key]
    assert framed == [True, True], "the corrupt block never reached a message"
    assert (await stub.Stats(kvpool_pb2.StatsRequest())).num_digest_failures == 1
    assert await r.get(redis_key(ns, b[1].key)) is None
    await r.aclose()
