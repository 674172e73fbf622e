"""Die leases: which worker holds which dies of the supernode, with heartbeat expiry (wall time)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from supernode.core.topology import DIES_PER_NPU, NPUS_PER_NODE, die_location
from supernode.runtime.errors import ResourceExhaustedError, invalid

__all__ = ["DIES_PER_NPU", "NPUS_PER_NODE", "Lease", "LeaseTable", "die_coordinates"]


@dataclass(slots=True)
class Lease:
    worker_id: str
    role: str
    dies: list[int]
    expires_at: float = field(default=0.0)


class LeaseTable:
    """Hands out dies first-fit in index order, so a worker's dies sit on as few nodes as possible."""

    def __init__(self, num_nodes: int, ttl_s: float) -> None:
        self.num_dies = num_nodes * NPUS_PER_NODE * DIES_PER_NPU
        self.ttl_s = ttl_s
        self.leases: dict[str, Lease] = {}
        self._owner: list[str | None] = [None] * self.num_dies

    def lease(self, worker_id: str, role: str, num_dies: int) -> Lease:
        self.expire()
        if not worker_id:
            raise invalid("worker_id", "must not be empty")
        if role not in ("prefill", "decode"):
            raise invalid("role", "must be 'prefill' or 'decode'")
        if num_dies < 1:
            raise invalid("num_dies", "must be >= 1")
        existing = self.leases.get(worker_id)
        if existing is not None:
            if len(existing.dies) != num_dies or existing.role != role:
                raise invalid("num_dies", f"worker {worker_id} already holds {len(existing.dies)} dies")
            existing.expires_at = time.monotonic() + self.ttl_s
            return existing
        free = [i for i, owner in enumerate(self._owner) if owner is None]
        if len(free) < num_dies:
            raise ResourceExhaustedError(
                f"num_dies: {num_dies} wanted, {len(free)} free of {self.num_dies}", field="num_dies"
            )
        dies = free[:num_dies]
        for die in dies:
            self._owner[die] = worker_id
        lease = Lease(worker_id, role, dies, time.monotonic() + self.ttl_s)
        self.leases[worker_id] = lease
        return lease

    def renew(self, worker_id: str) -> int:
        self.expire()
        lease = self.leases.get(worker_id)
        if lease is None:
            return 0
        lease.expires_at = time.monotonic() + self.ttl_s
        return len(lease.dies)

    def release(self, worker_id: str) -> int:
        lease = self.leases.pop(worker_id, None)
        if lease is None:
            return 0
        for die in lease.dies:
            self._owner[die] = None
        return len(lease.dies)

    def expire(self) -> list[str]:
        now = time.monotonic()
        expired = [w for w, lease in self.leases.items() if lease.expires_at < now]
        for worker_id in expired:
            self.release(worker_id)
        return expired

    @property
    def num_free(self) -> int:
        return sum(1 for owner in self._owner if owner is None)


def die_coordinates(index: int) -> tuple[int, int, int]:
    """(node, npu within the node, die within the NPU) of a global die index."""
    return die_location(index)
