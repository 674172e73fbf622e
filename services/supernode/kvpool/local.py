"""The pool's block logic over any `KvStore`, as a direct-call `PoolClient` (no server in between).

The same rules as the KvPool service: a block's payload is derived from its tokens and sealed with a
digest; stores are content-addressed (a present block is not written again); every read verifies the
digest and a corrupt block is dropped and reported missing. The in-process cluster and service tests
run it over `MemoryKvStore` (LRU under a byte cap), so pool occupancy and evictions are real.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import ClassVar, overload

from supernode.core import blocks
from supernode.hw.specs import KV_BYTES_PER_TOKEN
from supernode.kvpool.store import KvStore, MemoryKvStore
from supernode.runtime.peers import PoolBlock, PoolRead

log = logging.getLogger(__name__)


class BlockTokens(Sequence[int]):
    """A verified block's token ids, decoded from their packed varints when first read; its length is
    the block header's count (covered by the digest), so a reader that needs only how many tokens the
    blocks hold (decode when it only counts its output) decodes none."""

    __slots__ = ("_block", "_ids")

    def __init__(self, block: blocks.OpenedBlock) -> None:
        self._block = block
        self._ids: list[int] | None = None

    def __len__(self) -> int:
        return self._block.num_tokens

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: int | slice) -> int | list[int]:
        return self.ids[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self.ids == list(other)

    # Unhashable, as a list is: compared by value. None is Python's mark for that, which mypy
    # refuses against object's method (typeshed's list carries the same ignore).
    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    @property
    def ids(self) -> list[int]:
        if self._ids is None:
            self._ids = self._block.tokens
        return self._ids


class LocalPool:
    def __init__(
        self, store: KvStore | None = None, namespace: str = "sn", payload_ratio: float = 1 / 1024
    ) -> None:
        self.store: KvStore = store or MemoryKvStore()
        self.namespace = namespace
        self.payload_ratio = payload_ratio  # stored payload bytes / nominal KV bytes
        self.num_hits = 0  # blocks found by lookup and get
        self.num_misses = 0  # blocks asked for and not found
        self.bytes_written = 0  # payload bytes stored

    async def lookup(self, keys: Sequence[str]) -> int:
        present = await self.store.exists_many(self.namespace, keys)
        num_cached = next((i for i, ok in enumerate(present) if not ok), len(present))
        self.num_hits += num_cached
        self.num_misses += len(keys) - num_cached
        return num_cached

    async def put(self, new: Sequence[PoolBlock]) -> int:
        items = []
        for block in new:
            size = blocks.payload_size(len(block.tokens), KV_BYTES_PER_TOKEN, self.payload_ratio)
            items.append((block.key, blocks.seal_block(block.key, block.tokens, size)))
        written = await self.store.put_many(self.namespace, items)
        self.bytes_written += sum(len(v) for (_, v), ok in zip(items, written, strict=True) if ok)
        return sum(written)

    async def get(self, keys: Sequence[str]) -> PoolRead:
        found: list[BlockTokens] = []
        missing: list[str] = []
        for key, value in zip(keys, await self.store.get_many(self.namespace, keys), strict=True):
            if value is None:
                missing.append(key)
                continue
            try:
                found.append(BlockTokens(blocks.open_sealed(value)))
            except blocks.CorruptBlockError as err:
                log.warning("block %s failed verification (%s); dropping it", key, err)
                await self.store.delete(self.namespace, key)
                missing.append(key)
        self.num_hits += len(found)
        self.num_misses += len(missing)
        return PoolRead(found, missing)

    async def close(self) -> None:
        return None
