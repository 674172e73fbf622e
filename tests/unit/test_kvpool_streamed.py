"""GetStream's read-ahead: group sizes, the next read in flight while a group is handled, errors, close."""

from __future__ import annotations

import asyncio

import pytest

from supernode.kvpool.streamed import GROUP_BYTES, next_group_size, read_ahead


def test_group_sizes_follow_the_bytes_just_read() -> None:
    assert next_group_size([b"x" * (9 * 2**20)], 4096) == 1, "a block larger than a group travels alone"
    assert next_group_size([b"x" * 4096, None], 4096) == GROUP_BYTES // 4096 == 1024
    assert next_group_size([b"x" * 16], 100) == 100, "capped at the call's block limit"
    assert next_group_size([None, None], 4096) == 4, "misses only: the next group doubles"


def test_the_next_group_is_read_while_this_one_is_handled() -> None:
    async def main() -> None:
        started: list[list[str]] = []

        async def get(keys: list[str]) -> list[bytes | None]:
            started.append(keys)
            await asyncio.sleep(0)
            return [b"v" * GROUP_BYTES if k != "c" else None for k in keys]

        seen = []
        async for keys, values in read_ahead(["a", "b", "c", "d", "e"], get, 10):
            await asyncio.sleep(0.01)  # handling this group: the next read has started meanwhile
            seen.append((keys, [v is not None for v in values]))
            assert len(started) == min(len(seen) + 1, 4)
        assert seen == [(["a"], [True]), (["b"], [True]), (["c"], [False]), (["d", "e"], [True, True])]

    asyncio.run(main())


def test_a_failed_read_raises_after_the_groups_before_it() -> None:
    async def main() -> None:
        async def get(keys: list[str]) -> list[bytes | None]:
            if keys == ["c"]:
                raise ConnectionError("redis went away")
            return [b"v" * GROUP_BYTES for _ in keys]

        seen = []
        with pytest.raises(ConnectionError):
            async for keys, _ in read_ahead(["a", "b", "c", "d"], get, 10):
                seen.append(keys)
        assert seen == [["a"], ["b"]]

    asyncio.run(main())


def test_closing_early_cancels_the_read_in_flight() -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def get(keys: list[str]) -> list[bytes | None]:
            if keys != ["a"]:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
            return [b"v" * GROUP_BYTES for _ in keys]

        groups = read_ahead(["a", "b"], get, 10)
        assert (await anext(groups))[0] == ["a"]
        await asyncio.sleep(0)  # the read of ["b"] is under way
        await groups.aclose()
        assert cancelled.is_set()
        assert [g async for g in read_ahead([], get, 10)] == []

    asyncio.run(main())
