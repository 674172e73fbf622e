"""`GetStream`'s reading: the next group of blocks comes from Redis while the service sends this one.

A unary `Get` of full-size blocks runs in two phases one after the other: Redis sends every value to
the pool service, then the service sends the whole reply to the caller. Streamed, the reply leaves in
groups of blocks, and the read of group k+1 is in flight while group k is verified and written, so
Redis's send, the service's and the caller's receive overlap.

Groups are sized by bytes, not blocks: the first is one block; each next one holds about
`GROUP_BYTES` at the mean size of the values just read (many small blocks travel together, a 9 MB
block alone). At most two groups are held at once, the one being sent and the one being read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

GROUP_BYTES = 4 * 1024 * 1024  # about this many value bytes per group (and per stream message)

Values = list[bytes | None]


def next_group_size(values: Sequence[bytes | None], max_blocks: int) -> int:
    """How many blocks the next group gets, from the sizes of the values just read (misses count as
    small blocks; an all-miss group doubles)."""
    found = [len(v) for v in values if v is not None]
    if not found:
        return max(1, min(max_blocks, 2 * len(values)))
    mean = sum(found) / len(found)
    return max(1, min(max_blocks, int(GROUP_BYTES // max(mean, 1))))


async def read_ahead(
    keys: Sequence[str], get: Callable[[list[str]], Awaitable[Values]], max_blocks: int
) -> AsyncGenerator[tuple[list[str], Values], None]:
    """Yields (keys, values) group by group, in order; the next group's `get` runs while the caller
    handles the one yielded. A failed read raises when its group is due (the earlier ones were
    yielded); closing the iterator early cancels the read in flight."""
    start, size = 0, 1
    pending: asyncio.Task[Values] | None = None
    group: list[str] = []
    if keys:
        group = list(keys[:size])
        pending = asyncio.ensure_future(get(group))
    try:
        while pending is not None:
            values = await pending
            pending = None
            this, start = group, start + len(group)
            if start < len(keys):
                size = next_group_size(values, max_blocks)
                group = list(keys[start : start + size])
                pending = asyncio.ensure_future(get(group))
            yield this, values
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
