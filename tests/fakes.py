"""In-memory fakes behind the same Protocols as the real peers (runtime/peers.py), for service tests."""

from __future__ import annotations

from supernode.fabric.leases import die_coordinates
from supernode.fabric.links import path_figures, transfer_seconds
from supernode.kvpool.local import LocalPool
from supernode.kvpool.store import MemoryKvStore
from supernode.runtime.clock import Clock
from supernode.runtime.peers import Die, FabricClient, PoolClient, TransferResult


class FakeFabric:
    """Leases dies from 0 upward; a transfer waits its single-flow time on the given clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.next_die = 0
        self.transfers: list[tuple[str, int]] = []

    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[Die]:
        dies = []
        for index in range(self.next_die, self.next_die + num_dies):
            node, npu, die = die_coordinates(index)
            dies.append(Die(index, node, npu, die))
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


def FakePool() -> LocalPool:  # noqa: N802 (kept as the tests' name for the in-memory pool)
    """The pool's real block logic over an in-memory store, without a server."""
    return LocalPool(MemoryKvStore())


def _check_protocols(fabric: FakeFabric, pool: LocalPool) -> tuple[FabricClient, PoolClient]:
    """Type-level check (mypy): the fakes satisfy the real Protocols."""
    return fabric, pool
