"""The pool's one-pass packing of large Redis commands writes exactly redis-py's bytes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection

from supernode.kvpool.resp import fast_packing_class


def packed(connection: Any, *args: Any) -> bytes:
    return b"".join(bytes(part) for part in connection.pack_command(*args))


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "f" * 40, 0, *[f"ns:kv:{i:032x}" for i in range(200)], *[b"v" * i for i in range(200)]),
        ("MGET", *[f"kv:{i}" for i in range(300)]),
        ("EVALSHA", "ab", 2, "k\u00e9y", memoryview(b"x" * 70_000), b"y" * 200_000, 1.5, *range(20)),
        ("GET", "one"),  # few arguments: redis-py's own packing
        ("CONFIG GET", *["maxmemory"] * 20),  # a command name with a space: redis-py splits it
    ],
)
def test_same_bytes_as_redis_py(args: tuple[object, ...]) -> None:
    fast = fast_packing_class(Connection)()
    assert packed(fast, *args) == packed(Connection(), *args)


def test_large_arguments_stay_separate_buffers() -> None:
    big = b"z" * 1_000_000
    parts = fast_packing_class(Connection)().pack_command("EVALSHA", "ab", 0, *["k"] * 20, big)
    assert any(part is big for part in parts), "a multi-MB value is not copied into the command"


def test_the_class_is_made_once_per_base() -> None:
    assert fast_packing_class(Connection) is fast_packing_class(Connection)
    assert issubclass(fast_packing_class(SSLConnection), SSLConnection)
