"""The per-plane utilisation gauge reads only busy links; it must equal the mean over every link."""

from __future__ import annotations

from supernode.core.flows import FlowNetwork
from supernode.core.topology import Endpoint, Plane, Topology
from supernode.fabric.metrics import plane_utilization


def _mean_over_all_links(topology: Topology, flows: FlowNetwork) -> dict[str, float]:
    totals: dict[str, list[float]] = {plane.value: [] for plane in Plane}
    for link_id, link in topology.links.items():
        stats = flows.link_stats(link_id)
        totals[link.plane.value].append(0.0 if stats.is_down else stats.utilisation)
    return {plane: sum(v) / len(v) if v else 0.0 for plane, v in totals.items()}


def test_plane_utilization_matches_the_mean_over_every_link() -> None:
    topology = Topology(4)
    flows = FlowNetwork(topology.capacities())
    ub = topology.route(Endpoint("die", 0), Endpoint("cpu", 3), Plane.UB)
    rdma = topology.route(Endpoint("die", 1), Endpoint("die", 40), Plane.RDMA)
    flows.add("a", ub.links, 10**9, 0.0, rate_cap=ub.rate_cap_bytes_per_s)
    flows.add("b", rdma.links, 10**9, 0.0, rate_cap=rdma.rate_cap_bytes_per_s)
    got = plane_utilization(topology, flows)
    want = _mean_over_all_links(topology, flows)
    assert got.keys() == want.keys()
    assert got[Plane.UB.value] > 0 and got[Plane.RDMA.value] > 0
    for plane, value in want.items():
        assert abs(got[plane] - value) < 1e-12, plane
