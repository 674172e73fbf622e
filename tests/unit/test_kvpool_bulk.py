"""The direct reply reader parses what Redis sends, however the socket splits it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
import redis.exceptions

from supernode.kvpool.bulk import _DIRECT_BYTES, Buffers, BulkClient, _ReplyReader


def resp(values: Sequence[object]) -> bytes:
    out = [b"*%d\r\n" % len(values)]
    for value in values:
        if value is None:
            out.append(b"$-1\r\n")
        elif isinstance(value, int):
            out.append(b":%d\r\n" % value)
        else:
            assert isinstance(value, bytes)
            out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(out)


def feed(reader: _ReplyReader, data: bytes, cuts: list[int]) -> None:
    """Delivers `data` as the event loop would: into the reader's buffers, split at `cuts` at most."""
    at = 0
    bounds = iter([*sorted(cuts), len(data)])
    stop = next(bounds)
    while at < len(data):
        while stop <= at:
            stop = next(bounds)
        buffer = memoryview(reader.get_buffer(-1))
        n = min(len(buffer), stop - at, len(data) - at)
        buffer[:n] = data[at : at + n]
        reader.buffer_updated(n)
        at += n


async def read(data: bytes, cuts: list[int]) -> Any:
    reader = _ReplyReader(Buffers())
    waiter = reader.expect()
    feed(reader, data, cuts)
    assert waiter.done(), "the whole reply was fed"
    return waiter.result()


VALUES: list[object] = [
    b"a" * 4112,
    None,
    b"",
    7,
    b"b" * (_DIRECT_BYTES + 5),
    b"c" * 300_000,
    b"\r\n" * 40,
    b"d" * _DIRECT_BYTES,
]


@pytest.mark.parametrize("seed", range(12))
def test_any_split_of_a_reply_reads_the_same_values(seed: int) -> None:
    data = resp(VALUES)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 40)) if seed else []
    got = asyncio.run(read(data, cuts))
    assert isinstance(got, list)
    assert [None if v is None else v if isinstance(v, int) else bytes(v) for v in got] == VALUES


def test_large_values_land_in_their_own_buffers_and_replies_follow_each_other() -> None:
    async def main() -> None:
        reader = _ReplyReader(Buffers())
        for values in ([b"x" * 1_000_000, b"y" * 10], [], [None], [b"z" * 200_000]):
            waiter = reader.expect()
            feed(reader, resp(values), [3, 100, 5000])
            got: Any = await waiter
            assert [None if v is None else bytes(v) for v in got] == values
            assert all(isinstance(v, bytearray) for v in got if v is not None and len(v) >= _DIRECT_BYTES)

    asyncio.run(main())


def test_an_error_reply_is_redis_pys_exception() -> None:
    got = asyncio.run(read(b"-NOSCRIPT No matching script.\r\n", [5]))
    assert isinstance(got, redis.exceptions.NoScriptError)
    got = asyncio.run(read(b"-ERR Error running script: non local key\r\n", []))
    assert isinstance(got, redis.exceptions.ResponseError) and "non local key" in str(got)


def test_a_reply_it_cannot_read_fails_the_call() -> None:
    assert asyncio.run(read(b"+OK\r\n", [])) == [b"OK"]
    got = asyncio.run(read(b"%1\r\n:1\r\n:2\r\n", []))  # a RESP3 map: never asked for
    assert isinstance(got, redis.exceptions.ConnectionError)
    got = asyncio.run(read(b"*1\r\n*0\r\n", []))  # nested arrays: not what the pool reads
    assert isinstance(got, redis.exceptions.ConnectionError)


def test_tls_and_unix_sockets_are_left_to_redis_py() -> None:
    assert BulkClient.open("rediss://h:6380/0", 1, 1) is None
    assert BulkClient.open("unix:///tmp/redis.sock", 1, 1) is None
    client = BulkClient.open("redis://user:pw@h:6390/2", 1, 1)
    assert client is not None and (client.host, client.port) == ("h", 6390)


def test_recycled_buffers_receive_later_values_of_their_size() -> None:
    async def main() -> None:
        client = BulkClient("h", 1, [], 1, 1)
        reader = _ReplyReader(client.buffers)
        # Larger than the reader's chunk: a value the chunk holds whole is sliced out of it instead.
        first = [b"p" * 300_000, b"q" * 300_000, b"r" * 270_000]
        waiter = reader.expect()
        feed(reader, resp(first), [])
        got: Any = await waiter
        client.recycle([*got, b"small", None])
        waiter = reader.expect()
        second = [b"s" * 300_000, b"t" * 280_000]
        feed(reader, resp(second), [7])
        again: Any = await waiter
        assert [bytes(v) for v in again] == second
        assert again[0] is got[1] or again[0] is got[0], "a 300,000-byte buffer was reused"
        assert again[1] is not got[2], "no buffer of that size was spare"

    asyncio.run(main())
