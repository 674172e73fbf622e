"""Routing policies: pure selectors over load snapshots (sgl-router's select_worker_pair, STYLE #7).

The paper's policy needs no KV affinity: every NPU reaches the EMS pool at equal cost, so the router
reserves on a decode instance with room, then sends the prompt to the least-loaded prefill instance.
Round-robin and a KV-aware policy exist for comparison.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

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

    @property
    def is_available(self) -> bool:
        return self.is_healthy and not self.is_draining

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
