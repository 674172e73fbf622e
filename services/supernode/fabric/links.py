"""Single-flow transfer pricing (one transfer alone on an idle path), for fakes and quick estimates.

The figures come from the topology (`core.topology`), the one source of link capacities and measured
path figures; the fabric service itself shares links between concurrent transfers (`fabric.network`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from supernode.core.topology import Endpoint, EndpointKind, Plane, Route, Topology


@dataclass(frozen=True, slots=True)
class PathFigures:
    bandwidth_bytes_per_s: float  # what a lone transfer gets: the measured cap, else the narrowest link
    latency_s: float  # fixed per-message latency (s)


@cache
def _topology() -> Topology:
    return Topology()


def lone_bandwidth(topology: Topology, route: Route) -> float:
    """Bytes/s a transfer alone on `route` gets: its measured cap or its narrowest link, whichever is less."""
    narrowest = min(topology.links[link].capacity_bytes_per_s for link in route.links)
    cap = route.rate_cap_bytes_per_s
    return narrowest if cap is None else min(cap, narrowest)


def path_figures(plane: str, src: tuple[EndpointKind, int], dst: tuple[EndpointKind, int]) -> PathFigures:
    """Figures of a lone transfer from `src` to `dst`, each (kind, global index), on "ub", "rdma" or "vpc"."""
    topology = _topology()
    route = topology.route(Endpoint(src[0], src[1]), Endpoint(dst[0], dst[1]), Plane(plane))
    return PathFigures(lone_bandwidth(topology, route), route.latency_s)


def transfer_seconds(figures: PathFigures, num_bytes: int) -> float:
    """Emulated seconds a lone transfer of `num_bytes` takes: latency + bytes / bandwidth."""
    return figures.latency_s + num_bytes / figures.bandwidth_bytes_per_s
