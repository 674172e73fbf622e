"""Which store a Redis URL needs: one standalone Redis or a Redis Cluster (`kvpool.redis_mode`)."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
import redis.exceptions

from supernode.kvpool.cluster_nodes import split_urls
from supernode.kvpool.cluster_store import ClusterKvStore
from supernode.kvpool.store import REDIS_OPTIONS, KvStore, RedisKvStore, retry_once
from supernode.runtime.errors import UnavailableError

log = logging.getLogger(__name__)


async def is_cluster(url: str) -> bool:
    """Whether the Redis at `url` (the first of a list that answers) runs in cluster mode."""
    for one in split_urls(url):
        client = aioredis.Redis.from_url(one, retry=retry_once(), **REDIS_OPTIONS)
        try:
            info = await client.info("cluster")
        except redis.exceptions.RedisError:
            continue
        finally:
            await client.aclose()
        return bool(int(info.get("cluster_enabled", 0)))
    raise UnavailableError("kv pool: redis unreachable", retry_after_s=1.0)


async def open_store(url: str, mode: str, failover_wait_s: float = 5.0) -> KvStore:
    """The store for `url`: `standalone`, `cluster`, or `auto` (asks the server which it is)."""
    if mode == "auto":
        mode = "cluster" if await is_cluster(url) else "standalone"
    if mode == "standalone" and len(split_urls(url)) > 1:
        raise ValueError("redis_url: several URLs name cluster seeds; one Redis takes one URL")
    store: KvStore = ClusterKvStore(url, failover_wait_s) if mode == "cluster" else RedisKvStore(url)
    log.info("kv pool store: %s", mode)
    return store
