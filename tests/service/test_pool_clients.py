"""Workers' pool client over several stateless kvpool services on one real Redis: calls spread over
the services, and a service that goes away costs no call."""

from __future__ import annotations

import pytest

from supernode.core import blocks
from supernode.kvpool.service import build
from supernode.kvpool.store import RedisKvStore
from supernode.runtime.errors import UnavailableError
from supernode.runtime.peers import PoolBlock
from supernode.runtime.pool_clients import PoolClients
from tests.conftest import make_settings

BLOCK = 16


def _blocks(tokens: list[int]) -> list[PoolBlock]:
    keys = blocks.block_keys(tokens, BLOCK)
    return [PoolBlock(k, t) for k, t in zip(keys, blocks.split_blocks(tokens, BLOCK), strict=True)]


async def test_calls_spread_over_pool_services_and_fail_over(host_factory, redis_url):
    base = {"block_tokens": BLOCK, "namespace": "multi", "redis_url": redis_url}
    hosts = []
    for _ in range(2):
        settings = make_settings(kvpool=base)
        hosts.append(await host_factory(settings, build(settings, RedisKvStore(redis_url))))
    settings = make_settings(kvpool={**base, "addresses": [h.address for h in hosts]})
    client = PoolClients(settings)
    try:
        prompt = list(range(2000, 2000 + 6 * BLOCK))
        assert await client.put(_blocks(prompt)) == 6
        keys = [b.key for b in _blocks(prompt)]
        for _ in range(4):
            assert await client.lookup(keys) == 6
        served = [h.service.counters["multi"].num_hits for h in hosts]
        assert all(n > 0 for n in served), f"both services took calls: {served}"

        await hosts[0].drain_and_stop()  # one pool service gone: every call still answers
        for _ in range(4):
            got = await client.get(keys)
            assert not got.missing_keys and [t for b in got.blocks for t in b] == prompt
        assert client.num_failovers >= 1

        await hosts[1].drain_and_stop()
        with pytest.raises(UnavailableError):
            await client.lookup(keys)
    finally:
        await client.close()


async def test_addresses_accept_comma_separated_text():
    settings = make_settings(kvpool={"addresses": "a:1, b:2"})
    assert settings.kvpool.addresses == ["a:1", "b:2"]
    client = PoolClients(make_settings())
    assert client.addresses == [make_settings().kvpool.address], "empty = address"
    await client.close()
