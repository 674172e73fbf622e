"""The direct payload reader against a real redis-server: values, a password, a database, a restart."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from supernode.kvpool.bulk import BulkClient
from supernode.processes import REDIS_MALLOC_CONF, free_port, spawn_redis, terminate


def test_mget_reads_what_redis_py_reads(redis_url: str) -> None:
    async def main() -> None:
        writer = aioredis.Redis.from_url(redis_url)
        values = {f"bulk:{i}": bytes([i]) * (i * 50_000 + 3) for i in range(5)}
        await writer.mset(values)
        client = BulkClient.open(redis_url, 5, 2)
        assert client is not None
        keys = [*values, "bulk:absent"]
        got = await client.call("MGET", *keys)
        assert [None if v is None else bytes(v) for v in got] == await writer.mget(keys)
        with pytest.raises(redis.exceptions.ResponseError):
            await client.call("GET")  # wrong number of arguments: the error reply raises
        assert await client.call("MGET", "bulk:0") == [values["bulk:0"]], "the connection is reused"
        client.close()
        await writer.aclose()

    asyncio.run(main())


def test_password_database_and_a_restarted_server(tmp_path: Path) -> None:
    port = free_port()
    args = ["--requirepass", "s3cret"]
    proc = spawn_redis(port, "64mb", str(tmp_path), tmp_path / "redis.log", args)
    try:

        async def main() -> None:
            nonlocal proc
            url = f"redis://:s3cret@127.0.0.1:{port}/3"
            writer = aioredis.Redis.from_url(url)
            await writer.set("k", b"in db 3")
            client = BulkClient.open(url, 5, 2)
            assert client is not None
            assert await client.call("MGET", "k") == [b"in db 3"]
            wrong = BulkClient.open(f"redis://:nope@127.0.0.1:{port}/3", 5, 2)
            assert wrong is not None
            with pytest.raises(redis.exceptions.AuthenticationError):
                await wrong.call("MGET", "k")
            terminate(proc, 5)
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.call("MGET", "k")
            proc = spawn_redis(port, "64mb", str(tmp_path), tmp_path / "redis2.log", args)
            await aioredis.Redis.from_url(url).set("k", b"again")
            assert await client.call("MGET", "k") == [b"again"], "a fresh connection after the restart"
            client.close()

        asyncio.run(main())
    finally:
        terminate(proc, 5)


def test_the_local_redis_keeps_freed_memory(redis_url: str) -> None:
    """spawn_redis's allocator setting reaches the server (large replies then reuse their pages)."""

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        stats = (await client.execute_command("MEMORY", "MALLOC-STATS")).decode()
        await client.aclose()
        if "jemalloc" not in stats:
            pytest.skip("redis-server not built with jemalloc")
        decay = os.environ.get("MALLOC_CONF", REDIS_MALLOC_CONF).partition("dirty_decay_ms:")[2].split(",")[0]
        assert f"opt.dirty_decay_ms: {decay or 10000} " in stats

    asyncio.run(main())
