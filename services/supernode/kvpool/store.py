"""Where KV blocks are kept: the `KvStore` protocol, the standalone Redis store and an in-memory fake.

Every store holds sealed blocks (digest + payload) under `<namespace>:kv:<key>`. The in-memory store is
for fast service tests only; it, the standalone store and the cluster store (`cluster_store.py`) run
through the same parametrized tests. `open_store` picks the Redis store a URL needs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from supernode.kvpool import frames
from supernode.kvpool.bulk import Buffers, BulkClient
from supernode.kvpool.resp import use_fast_packing
from supernode.kvpool.scripts import BlockScripts, is_script_refused
from supernode.runtime.errors import UnavailableError

log = logging.getLogger(__name__)

# Connection errors are retried once on a fresh connection (a restarted Redis leaves stale pooled
# sockets behind); idle connections are PINGed before reuse after this many seconds.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
HEALTH_CHECK_INTERVAL_S = 5
REDIS_OPTIONS: dict[str, Any] = {
    "socket_timeout": 10.0,
    "socket_connect_timeout": 2.0,
    "health_check_interval": HEALTH_CHECK_INTERVAL_S,
}


def open_direct(options: dict[str, Any], buffers: Buffers | None = None) -> BulkClient | None:
    """The direct payload reader for a node's redis-py connection options (None where it does not
    apply: TLS, unix socket); `buffers` shared with the store's other nodes."""
    timeouts = (REDIS_OPTIONS["socket_timeout"], REDIS_OPTIONS["socket_connect_timeout"])
    return BulkClient.for_node(options, *timeouts, buffers)


def retry_once() -> Retry:
    return Retry(NoBackoff(), 1, supported_errors=CONNECTION_ERRORS)


def redis_key(namespace: str, key: str) -> str:
    return f"{namespace}:kv:{key}"


@dataclass(frozen=True, slots=True)
class NodeStats:
    """One Redis node as the pool sees it (a scrape-time snapshot)."""

    node: str  # host:port
    role: str  # "master" or "replica" (standalone: "master")
    is_up: bool  # answered INFO just now
    used_memory_bytes: int
    max_memory_bytes: int  # the node's LRU cap (0 = none)
    num_keys: int  # every key on the node (DBSIZE), all namespaces
    num_evicted: int  # keys the node's LRU has evicted since it started
    num_hits: int  # blocks this pool service found on the node (Lookup and Get)
    num_misses: int  # blocks this pool service asked the node for and did not find


class KvStore(Protocol):
    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        """Whether each key is stored (a key on an unreachable cluster node counts as absent)."""
        ...

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """The sealed value of each key, None when absent or unreachable."""
        ...

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Stores values not yet present; True for each one newly written (False: present or dropped)."""
        ...

    def recycle(self, values: Sequence[bytes | None]) -> None:
        """Values `get_many` returned that the caller no longer uses, nor refers to: the store may
        read later values into their buffers."""
        ...

    async def delete(self, namespace: str, key: str) -> None: ...

    async def num_keys(self, namespace: str) -> int: ...

    async def memory_info(self) -> tuple[int, int]:
        """(used memory bytes, keys evicted so far), summed over the master nodes."""
        ...

    async def node_stats(self) -> list[NodeStats]:
        """Every node's memory, keys, evictions and hit counts."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class RedisKvStore:
    """Blocks in one standalone Redis: a batch is one command (a script, MGET; pipelines of single-key
    commands where the server cannot run the scripts); connection errors surface as UnavailableError."""

    def __init__(self, url: str) -> None:
        self._redis = use_fast_packing(aioredis.Redis.from_url(url, retry=retry_once(), **REDIS_OPTIONS))
        # reads payloads (None: redis-py reads them), a large block into the message serving it
        self._bulk = open_direct(dict(parse_url(url)), Buffers(frames.room_for))
        kwargs = self._redis.connection_pool.connection_kwargs
        self.node = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._hits = 0
        self._misses = 0
        self._scripts = BlockScripts()
        self.is_scripted = True  # False once the server refused the scripts (Redis < 7.0)

    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []
        full = [redis_key(namespace, k) for k in keys]
        async with _guard():
            replies = await self._scripted(lambda: self._scripts.exists(self._redis, full))
            if replies is None:
                pipe = self._redis.pipeline(transaction=False)
                for key in full:
                    pipe.exists(key)
                replies = await pipe.execute()
        found = [bool(n) for n in replies]
        self._count(found)
        return found

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        full = [redis_key(namespace, k) for k in keys]
        async with _guard():
            replies: list[Any] = await (
                self._redis.mget(full) if self._bulk is None else self._bulk.call("MGET", *full)
            )
        # bytes, or a bytearray (a large value the direct reader filled in place), or None
        values: list[bytes | None] = list(replies)
        self._count([v is not None for v in values])
        return values

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        if not items:
            return []
        full = [redis_key(namespace, k) for k, _ in items]
        values = [v for _, v in items]
        async with _guard():
            replies = await self._scripted(lambda: self._scripts.put_nx(self._redis, full, values))
            if replies is None:
                pipe = self._redis.pipeline(transaction=False)
                for key, value in zip(full, values, strict=True):
                    pipe.set(key, value, nx=True)
                replies = await pipe.execute()
        return [bool(ok) for ok in replies]

    def recycle(self, values: Sequence[bytes | None]) -> None:
        if self._bulk is not None:
            self._bulk.recycle(values)

    async def _scripted(self, call: Callable[[], Awaitable[list[Any]]]) -> list[Any] | None:
        """The script's replies, or None when the server cannot run scripts (then never again)."""
        if not self.is_scripted:
            return None
        try:
            return await call()
        except redis.exceptions.ResponseError as err:
            if not is_script_refused(err):
                raise
            log.warning("redis refused the pool's scripts (%s); using pipelines", err)
            self.is_scripted = False
            return None

    async def delete(self, namespace: str, key: str) -> None:
        async with _guard():
            await self._redis.delete(redis_key(namespace, key))

    async def num_keys(self, namespace: str) -> int:
        async with _guard():
            count = 0
            async for _ in self._redis.scan_iter(match=f"{namespace}:kv:*", count=1000):
                count += 1
            return count

    async def memory_info(self) -> tuple[int, int]:
        async with _guard():
            memory = await self._redis.info("memory")
            stats = await self._redis.info("stats")
            return int(memory.get("used_memory", 0)), int(stats.get("evicted_keys", 0))

    async def node_stats(self) -> list[NodeStats]:
        return [await read_node_stats(self._redis, self.node, "master", self._hits, self._misses)]

    async def ping(self) -> None:
        async with _guard():
            await self._redis.ping()

    async def close(self) -> None:
        if self._bulk is not None:
            self._bulk.close()
        await self._redis.aclose()

    def _count(self, found: list[bool]) -> None:
        num_found = sum(found)
        self._hits += num_found
        self._misses += len(found) - num_found


async def read_node_stats(client: aioredis.Redis, node: str, role: str, hits: int, misses: int) -> NodeStats:
    """INFO and DBSIZE of one node; a node that does not answer is reported down, at zero."""
    try:
        info = await client.info()
        num_keys = int(await client.dbsize())
    except redis.exceptions.RedisError:
        return NodeStats(node, role, False, 0, 0, 0, 0, hits, misses)
    return NodeStats(
        node=node,
        role=role,
        is_up=True,
        used_memory_bytes=int(info.get("used_memory", 0)),
        max_memory_bytes=int(info.get("maxmemory", 0)),
        num_keys=num_keys,
        num_evicted=int(info.get("evicted_keys", 0)),
        num_hits=hits,
        num_misses=misses,
    )


class _Guard:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # The message names no host or port: it may reach clients.
        if isinstance(exc, CONNECTION_ERRORS):
            raise UnavailableError("kv pool: redis unreachable", retry_after_s=1.0) from exc
        if isinstance(exc, redis.exceptions.RedisError):
            raise UnavailableError(f"kv pool: redis error ({type(exc).__name__})", retry_after_s=1.0) from exc


def _guard() -> _Guard:
    return _Guard()


class MemoryKvStore:
    """An LRU dict with a byte cap; the service-test stand-in for Redis."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._evicted = 0
        self._hits = 0
        self._misses = 0

    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        found = [redis_key(namespace, k) in self._data for k in keys]
        self._hits += sum(found)
        self._misses += len(found) - sum(found)
        return found

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            full = redis_key(namespace, key)
            value = self._data.get(full)
            if value is not None:
                self._data.move_to_end(full)
                self._hits += 1
            else:
                self._misses += 1
            out.append(value)
        return out

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        written = []
        for key, value in items:
            full = redis_key(namespace, key)
            if full in self._data:
                written.append(False)
                continue
            self._data[full] = value
            self._bytes += len(value)
            written.append(True)
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)
                self._evicted += 1
        return written

    def recycle(self, values: Sequence[bytes | None]) -> None:
        return None  # the values are the stored objects themselves

    async def delete(self, namespace: str, key: str) -> None:
        value = self._data.pop(redis_key(namespace, key), None)
        if value is not None:
            self._bytes -= len(value)

    async def num_keys(self, namespace: str) -> int:
        prefix = f"{namespace}:kv:"
        return sum(1 for k in self._data if k.startswith(prefix))

    async def memory_info(self) -> tuple[int, int]:
        return self._bytes, self._evicted

    async def node_stats(self) -> list[NodeStats]:
        return [
            NodeStats(
                "memory", "master", True, self._bytes, self.max_bytes, len(self._data), self._evicted,
                self._hits, self._misses,
            )
        ]  # fmt: skip

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
