"""Routing policies: pure selectors over load snapshots (sgl-router's select_worker_pair, STYLE #7).

The paper's policy needs no KV affinity: every NPU reaches the EMS pool at equal cost, so the router
reserves on a decode instance with room, then sends the prompt to the least-loaded prefill instance.
Round-robin and a KV-aware policy exist for comparison.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from supernode.core.topology import DIES_PER_NODE, DIES_PER_NPU, rdma_port

POLICIES = ("paper", "round_robin", "kv_aware")


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    address: str
    is_healthy: bool
    is_draining: bool
    num_inflight: int  # requests this router has in flight there
    num_waiting: int  # the worker's own queue length (last load report)
    kv_tokens_used: int
    kv_tokens_capacity: int
    worker_id: str = ""  # the id the worker leases its dies under ('' = not known yet)
    is_behind_fault: bool = False  # a fabric fault holds one of its links down (see `mark_behind_faults`)

    @property
    def is_available(self) -> bool:
        return self.is_healthy and not self.is_draining and not self.is_behind_fault

    @property
    def kv_free(self) -> int:
        return max(0, self.kv_tokens_capacity - self.kv_tokens_used)


def decode_order(workers: Sequence[WorkerSnapshot], need_kv_tokens: int) -> list[int]:
    """Decode instances to try, best first: available ones with room for the request, most free KV
    first (ties: fewer in flight); instances without a load report yet come last, not never."""
    candidates = [i for i, w in enumerate(workers) if w.is_available]
    roomy = [
        i for i in candidates if workers[i].kv_tokens_capacity == 0 or workers[i].kv_free >= need_kv_tokens
    ]
    rest = [i for i in candidates if i not in roomy]
    key = lambda i: (-workers[i].kv_free, workers[i].num_inflight)  # noqa: E731
    return sorted(roomy, key=key) + sorted(rest, key=key)


def prefill_order(
    workers: Sequence[WorkerSnapshot],
    policy: str = "paper",
    counter: int = 0,
    affinity: int | None = None,
) -> list[int]:
    """Prefill instances to try, best first.

    paper: least loaded (this router's in-flight count plus the worker's reported queue);
    round_robin: rotate by `counter`; kv_aware: `affinity` (the instance that last served the same
    prefix) first when available, then least loaded.
    """
    candidates = [i for i, w in enumerate(workers) if w.is_available]
    load = lambda i: (workers[i].num_inflight + workers[i].num_waiting, i)  # noqa: E731
    if policy == "round_robin":
        n = len(workers)
        return [i for i in ((counter + k) % n for k in range(n)) if i in candidates]
    ordered = sorted(candidates, key=load)
    if policy == "kv_aware" and affinity is not None and affinity in ordered:
        ordered.remove(affinity)
        ordered.insert(0, affinity)
    return ordered


class AffinityTable:
    """Which prefill instance last served a prefix (its first block's key); LRU-bounded."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._last: OrderedDict[str, int] = OrderedDict()

    def get(self, prefix_key: str) -> int | None:
        return self._last.get(prefix_key)

    def put(self, prefix_key: str, worker: int) -> None:
        self._last[prefix_key] = worker
        self._last.move_to_end(prefix_key)
        while len(self._last) > self.max_entries:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)


# -- fault-aware routing: which instances sit behind a downed fabric link


class FaultLike(Protocol):
    """A fabric fault (`fabric_pb2.Fault` or `fabric.faults.Fault`)."""

    @property
    def link_ids(self) -> Sequence[str]: ...
    @property
    def bandwidth_factor(self) -> float: ...


class LeaseLike(Protocol):
    """A die lease (`fabric_pb2.WorkerLease` or `fabric.leases.Lease`)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def dies(self) -> Sequence[int]: ...


def links_of_die(die: int) -> tuple[str, ...]:
    """The links every KV movement of a die depends on: its UB and RDMA ports, its NPU's cross-die
    link and its node's uplinks to the L2 tier (cache loads from other nodes' EMS DRAM cross them)."""
    node, npu = die // DIES_PER_NODE, die // DIES_PER_NPU
    return (
        f"ub/die{die}/tx", f"ub/die{die}/rx", rdma_port(die, "tx"), rdma_port(die, "rx"),
        f"d2d/npu{npu}/0to1", f"d2d/npu{npu}/1to0", f"ub/node{node}/up", f"ub/node{node}/down",
    )  # fmt: skip


def instances_behind_faults(
    faults: Iterable[FaultLike], leases: Iterable[LeaseLike], min_bandwidth_factor: float = 0.0
) -> frozenset[str]:
    """Worker ids holding a die whose links a fault leaves at or below `min_bandwidth_factor` of
    their capacity (0.0, the default: only links that are down; 0.5 also avoids halved links).
    Input: the fabric's `Describe` answer (`faults`, `leases`); output: ids to route around."""
    bad_links = {
        link for fault in faults if fault.bandwidth_factor <= min_bandwidth_factor for link in fault.link_ids
    }
    if not bad_links:
        return frozenset()
    return frozenset(
        lease.worker_id
        for lease in leases
        if any(link in bad_links for die in lease.dies for link in links_of_die(die))
    )


def mark_behind_faults(
    workers: Sequence[WorkerSnapshot], affected: frozenset[str] | set[str]
) -> list[WorkerSnapshot]:
    """The snapshots with `is_behind_fault` set on those whose worker id (or address) is in
    `affected`; the selectors above then skip them while the fault lasts."""
    if not affected:  # no fault: only a stale flag needs clearing (copying every snapshot is not free)
        return [replace(w, is_behind_fault=False) if w.is_behind_fault else w for w in workers]
    return [
        replace(w, is_behind_fault=(bool(w.worker_id) and w.worker_id in affected) or w.address in affected)
        for w in workers
    ]
