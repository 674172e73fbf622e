"""Injected faults: which links are degraded or down, by how much and until when (emulated time).

Pure bookkeeping, no clock: times are the fabric's emulated seconds since its origin. Overlapping faults
on one link combine by the harshest: the link keeps the smallest `bandwidth_factor` of its active faults,
and is down while any of them has factor 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fault:
    fault_id: int  # assigned in order from 1
    link_ids: tuple[str, ...]  # links affected
    bandwidth_factor: float  # capacity kept, 0..1 (0 = down)
    start_s: float  # emulated time it began (s since the fabric's origin)
    end_s: float  # emulated time it ends (s since the fabric's origin)


class FaultTable:
    """Active faults and, per link, the capacity factor they leave."""

    def __init__(self) -> None:
        self.active: dict[int, Fault] = {}
        self._by_link: dict[str, set[int]] = {}
        self._ids = itertools.count(1)

    def add(self, link_ids: Iterable[str], bandwidth_factor: float, start_s: float, end_s: float) -> Fault:
        """Records a fault on `link_ids` from `start_s` to `end_s` (emulated s); inputs are pre-validated."""
        fault = Fault(next(self._ids), tuple(link_ids), bandwidth_factor, start_s, end_s)
        self.active[fault.fault_id] = fault
        for link in fault.link_ids:
            self._by_link.setdefault(link, set()).add(fault.fault_id)
        return fault

    def remove(self, fault_id: int) -> Fault:
        """Ends a fault; returns it (its links need their capacity recomputed)."""
        fault = self.active.pop(fault_id)
        for link in fault.link_ids:
            ids = self._by_link[link]
            ids.discard(fault_id)
            if not ids:
                del self._by_link[link]
        return fault

    def next_end_s(self) -> float | None:
        """When the next active fault ends (emulated s), None when there is none."""
        if not self.active:
            return None
        return min(fault.end_s for fault in self.active.values())

    def due(self, now_s: float) -> list[Fault]:
        """Active faults ending at or before `now_s`, earliest first."""
        if not self.active:  # the usual case: checked on every settle of the fabric
            return []
        return sorted((f for f in self.active.values() if f.end_s <= now_s), key=lambda f: f.end_s)

    def factor(self, link: str) -> float:
        """Capacity factor the active faults leave on `link` (1.0 when none, 0.0 when down)."""
        ids = self._by_link.get(link)
        return min(self.active[i].bandwidth_factor for i in ids) if ids else 1.0
