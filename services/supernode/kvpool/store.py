"""Where KV blocks are kept: the `KvStore` protocol, the Redis store and an in-memory fake.

Both stores hold sealed blocks (digest + payload) under `<namespace>:kv:<key>`. The in-memory store is
for fast service tests only and runs through the same parametrized tests as the Redis one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions

from supernode.runtime.errors import UnavailableError


def redis_key(namespace: str, key: str) -> str:
    return f"{namespace}:kv:{key}"


class KvStore(Protocol):
    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        """Whether each key is stored."""
        ...

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """The sealed value of each key, None when absent."""
        ...

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Stores values not yet present; True for each one newly written."""
        ...

    async def delete(self, namespace: str, key: str) -> None: ...

    async def num_keys(self, namespace: str) -> int: ...

    async def memory_info(self) -> tuple[int, int]:
        """(used memory bytes, keys evicted so far)."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class RedisKvStore:
    """Blocks in Redis (redis.asyncio, pipelined); connection errors surface as UnavailableError."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)

    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        async with self._guard():
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.exists(redis_key(namespace, key))
            return [bool(n) for n in await pipe.execute()]

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        async with self._guard():
            if not keys:
                return []
            values = await self._redis.mget([redis_key(namespace, k) for k in keys])
            return [v if isinstance(v, bytes | None) else str(v).encode() for v in values]

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        async with self._guard():
            pipe = self._redis.pipeline(transaction=False)
            for key, value in items:
                pipe.set(redis_key(namespace, key), value, nx=True)
            return [bool(ok) for ok in await pipe.execute()]

    async def delete(self, namespace: str, key: str) -> None:
        async with self._guard():
            await self._redis.delete(redis_key(namespace, key))

    async def num_keys(self, namespace: str) -> int:
        async with self._guard():
            count = 0
            async for _ in self._redis.scan_iter(match=f"{namespace}:kv:*", count=1000):
                count += 1
            return count

    async def memory_info(self) -> tuple[int, int]:
        async with self._guard():
            memory = await self._redis.info("memory")
            stats = await self._redis.info("stats")
            return int(memory.get("used_memory", 0)), int(stats.get("evicted_keys", 0))

    async def ping(self) -> None:
        async with self._guard():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    def _guard(self) -> _RedisGuard:
        return _RedisGuard()


class _RedisGuard:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # Returns None (never suppresses), so type checkers see the guarded block's returns as final.
        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            raise UnavailableError(f"redis unreachable: {exc}", retry_after_s=1.0) from exc
        if isinstance(exc, redis.exceptions.RedisError):
            raise UnavailableError(f"redis error: {exc}", retry_after_s=1.0) from exc


class MemoryKvStore:
    """An LRU dict with a byte cap; the service-test stand-in for Redis."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._evicted = 0

    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        return [redis_key(namespace, k) in self._data for k in keys]

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            full = redis_key(namespace, key)
            value = self._data.get(full)
            if value is not None:
                self._data.move_to_end(full)
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

    async def delete(self, namespace: str, key: str) -> None:
        value = self._data.pop(redis_key(namespace, key), None)
        if value is not None:
            self._bytes -= len(value)

    async def num_keys(self, namespace: str) -> int:
        prefix = f"{namespace}:kv:"
        return sum(1 for k in self._data if k.startswith(prefix))

    async def memory_info(self) -> tuple[int, int]:
        return self._bytes, self._evicted

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
