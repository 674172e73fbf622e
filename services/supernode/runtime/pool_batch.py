"""A `PoolClient` that sends the pool calls made at about the same moment as one RPC.

A prefill worker's requests arrive and finish in groups (every request of a batch finishes in the same
step), and each would otherwise make its own Lookup and Put round trip. Here the calls made during one
turn of the event loop, and those made while earlier batches are on the wire, go out together: lookups
as one `LookupMany` (keys shared between prompts asked once), stores as one `Put`. At most
`max_inflight` batches are on the wire per kind, so a lone call goes out at once and a burst is sent in
a few large calls; a batch never exceeds `max_blocks_per_call` blocks (a caller's own call may, and gets
the pool's INVALID_ARGUMENT as before). Each caller gets its own answer, or the batch's error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from supernode.runtime.errors import UnavailableError
from supernode.runtime.peers import PoolBlock, PoolRead

T = TypeVar("T")
R = TypeVar("R")
MAX_INFLIGHT = 2  # batches of one kind on the wire at once


class BatchPoolClient(Protocol):
    """What the batching client needs underneath (the gRPC pool clients)."""

    async def lookup_many(self, prefixes: Sequence[Sequence[str]]) -> list[int]: ...

    async def put_each(self, blocks: Sequence[PoolBlock]) -> list[bool]: ...

    async def get(self, keys: Sequence[str]) -> PoolRead: ...

    async def close(self) -> None: ...


class Batcher(Generic[T, R]):
    """Gathers `submit`ted items and serves them with `send(items) -> results` (one per item, in order)."""

    def __init__(
        self, send: Callable[[list[T]], Awaitable[list[R]]], weight: Callable[[T], int], max_weight: int,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:  # fmt: skip
        self._send_fn = send
        self._weight = weight
        self._max_weight = max_weight
        self._max_inflight = max_inflight
        # One entry per waiting caller, so it is bounded by the worker's own queues (prefill's max_queue).
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._is_scheduled = False
        self.num_calls = 0  # batches sent
        self.num_items = 0  # items they carried

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if self._is_scheduled or not self._pending or len(self._tasks) >= self._max_inflight:
            return
        self._is_scheduled = True
        asyncio.get_running_loop().call_soon(self._launch)  # after the rest of this turn has submitted

    def _launch(self) -> None:
        self._is_scheduled = False
        while self._pending and len(self._tasks) < self._max_inflight:
            task = asyncio.get_running_loop().create_task(self._send(self._take()))
            self._tasks.add(task)
            task.add_done_callback(self._on_sent)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        group: list[tuple[T, asyncio.Future[R]]] = []
        total = 0
        while self._pending:
            weight = self._weight(self._pending[0][0])
            if group and total + weight > self._max_weight:
                break
            group.append(self._pending.popleft())
            total += weight
        return group

    def _on_sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._kick()

    async def _send(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        group = [(item, future) for item, future in group if not future.done()]  # callers that left
        if not group:
            return
        self.num_calls += 1
        self.num_items += len(group)
        try:
            results = await self._send_fn([item for item, _ in group])
        except BaseException as err:
            failure = err if isinstance(err, Exception) else UnavailableError("pool client closed")
            for _, future in group:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(err, Exception):
                raise
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class BatchingPool:
    """A `PoolClient` over `inner` whose lookups and stores go out batched (module doc)."""

    def __init__(self, inner: BatchPoolClient, max_blocks_per_call: int) -> None:
        self.inner = inner
        self.lookups: Batcher[Sequence[str], int] = Batcher(inner.lookup_many, len, max_blocks_per_call)
        self.stores: Batcher[Sequence[PoolBlock], int] = Batcher(self._put, len, max_blocks_per_call)

    async def lookup(self, keys: Sequence[str]) -> int:
        return await self.lookups.submit(keys)

    async def put(self, blocks: Sequence[PoolBlock]) -> int:
        return await self.stores.submit(blocks)

    async def get(self, keys: Sequence[str]) -> PoolRead:
        return await self.inner.get(keys)

    async def close(self) -> None:
        await self.lookups.close()
        await self.stores.close()
        await self.inner.close()

    async def _put(self, groups: list[Sequence[PoolBlock]]) -> list[int]:
        stored = await self.inner.put_each([block for group in groups for block in group])
        counts, start = [], 0
        for group in groups:
            counts.append(sum(stored[start : start + len(group)]))
            start += len(group)
        return counts
