"""In-memory fakes behind the same Protocols as the real peers (runtime/peers.py), for service tests."""

from __future__ import annotations

from collections.abc import Sequence

from supernode.core import blocks
from supernode.fabric.leases import die_coordinates
from supernode.fabric.links import path_figures, transfer_seconds
from supernode.hw.specs import KV_BYTES_PER_TOKEN
from supernode.kvpool.store import MemoryKvStore
from supernode.runtime.clock import Clock
from supernode.runtime.peers import FabricClient, PoolClient, TransferResult
from supernode.v1 import common_pb2, kvpool_pb2


class FakeFabric:
    """Leases dies from 0 upward; a transfer waits its single-flow time on the given clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.next_die = 0
        self.transfers: list[tuple[str, int]] = []

    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[common_pb2.Die]:
        dies = []
        for index in range(self.next_die, self.next_die + num_dies):
            node, npu, die = die_coordinates(index)
            dies.append(common_pb2.Die(index=index, node=node, npu=npu, die=die))
        self.next_die += num_dies
        return dies

    async def renew(self, worker_id: str) -> int:
        return 1

    async def release(self, worker_id: str) -> None:
        return None

    async def transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> TransferResult:
        start = self.clock.now()
        finish = start + transfer_seconds(path_figures(plane, src, dst), num_bytes)
        self.transfers.append((tag, num_bytes))
        await self.clock.sleep_until(finish)
        return TransferResult(start, finish)

    async def close(self) -> None:
        return None


class FakePool:
    """The pool's semantics over MemoryKvStore, without a server."""

    def __init__(self, store: MemoryKvStore | None = None, namespace: str = "sn") -> None:
        self.store = store or MemoryKvStore()
        self.namespace = namespace

    async def lookup(self, keys: Sequence[str]) -> int:
        present = await self.store.exists_many(self.namespace, keys)
        return next((i for i, ok in enumerate(present) if not ok), len(present))

    async def put(self, new: Sequence[kvpool_pb2.Block]) -> kvpool_pb2.PutResponse:
        items = []
        for block in new:
            payload = blocks.make_payload(
                block.key, block.tokens, blocks.payload_size(len(block.tokens), 8, 1.0)
            )
            items.append((block.key, blocks.seal(payload)))
        written = await self.store.put_many(self.namespace, items)
        return kvpool_pb2.PutResponse(num_stored=sum(written))

    async def get(self, keys: Sequence[str]) -> kvpool_pb2.GetResponse:
        reply = kvpool_pb2.GetResponse()
        for key, value in zip(keys, await self.store.get_many(self.namespace, keys), strict=True):
            if value is None:
                reply.missing_keys.append(key)
                continue
            tokens = blocks.open_sealed(value).tokens
            reply.blocks.append(
                kvpool_pb2.Block(key=key, tokens=tokens, nominal_bytes=len(tokens) * KV_BYTES_PER_TOKEN)
            )
        return reply

    async def close(self) -> None:
        return None


def _check_protocols(fabric: FakeFabric, pool: FakePool) -> tuple[FabricClient, PoolClient]:
    """Type-level check (mypy): the fakes satisfy the real Protocols."""
    return fabric, pool
