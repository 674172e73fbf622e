"""Topology: counts, indices, capacities and routes follow reference sections 1.1-1.3."""

from __future__ import annotations

import pytest

from supernode.core.topology import (
    GB,
    UB_MEASURED,
    Endpoint,
    Op,
    Plane,
    RouteError,
    Topology,
    cpu_index,
    die_index,
    die_location,
)


@pytest.fixture(scope="module")
def full() -> Topology:
    return Topology()


def die(index: int) -> Endpoint:
    return Endpoint("die", index)


def cpu(index: int) -> Endpoint:
    return Endpoint("cpu", index)


def test_full_supernode_counts(full: Topology) -> None:
    assert (full.num_nodes, full.num_npus, full.num_dies, full.num_cpus) == (48, 384, 768, 192)


def test_small_topologies_are_configurable() -> None:
    small = Topology(num_nodes=2)
    assert (small.num_dies, small.num_cpus) == (32, 8)
    with pytest.raises(ValueError):
        Topology(num_nodes=0)


def test_indices_round_trip() -> None:
    assert die_index(0, 0, 0) == 0
    assert die_index(47, 7, 1) == 767
    assert cpu_index(47, 3) == 191
    for index in range(768):
        assert die_index(*die_location(index)) == index


def test_capacities_follow_the_reference(full: Topology) -> None:
    caps = full.capacities()
    assert caps["ub/die0/tx"] == 196 * GB  # 7 x 224 Gbit/s
    assert caps["ub/cpu0/rx"] == 160 * GB
    assert caps["d2d/npu0/0to1"] == 270 * GB
    assert caps["rdma/die0/tx"] == 25 * GB  # 200 Gbit/s
    assert caps["vpc/node0/tx"] == 50 * GB  # 400 Gbit/s
    # Non-blocking: the node's L1 uplinks carry all 8 NPUs at 392 GB/s each.
    assert caps["ub/node0/up"] == 8 * 392 * GB == 7 * 16 * 28 * GB


def test_links_of_a_node_are_its_own(full: Topology) -> None:
    links = full.links_of_node(1)
    assert "ub/die16/tx" in links and "ub/node1/up" in links and "ub/cpu4/tx" in links
    assert "ub/die15/tx" not in links and "rdma/die32/tx" not in links
    assert all(full.links[link].node == 1 for link in links)
    assert sum(len(full.links_of_node(n)) for n in range(48)) == len(full.links)


@pytest.mark.parametrize(
    ("src", "dst", "op", "path", "expected_op"),
    [
        (die(0), die(2), Op.READ, "npu-npu", Op.READ),
        (die(0), die(2), Op.WRITE, "npu-npu", Op.WRITE),
        (cpu(0), die(2), None, "npu-cpu", Op.READ),
        (die(2), cpu(0), None, "npu-cpu", Op.WRITE),
    ],
)
def test_ub_routes_use_the_measured_table(
    full: Topology, src: Endpoint, dst: Endpoint, op: Op | None, path: str, expected_op: Op
) -> None:
    intra = full.route(src, dst, Plane.UB, op)
    far = Endpoint(dst.kind, dst.index + (16 if dst.kind == "die" else 4) * 5)  # five nodes away
    inter = full.route(src, far, Plane.UB, op)
    assert intra.op == inter.op == expected_op
    assert not intra.is_inter_node and len(intra.links) == 2
    assert inter.is_inter_node and inter.links[1:3] == ("ub/node0/up", "ub/node5/down")
    assert intra.rate_cap_bytes_per_s == UB_MEASURED[(path, expected_op, False)].bandwidth_bytes_per_s
    assert inter.rate_cap_bytes_per_s == UB_MEASURED[(path, expected_op, True)].bandwidth_bytes_per_s
    assert intra.latency_s == UB_MEASURED[(path, expected_op, False)].latency_s


def test_measured_table_values() -> None:
    assert UB_MEASURED[("npu-npu", Op.READ, True)].bandwidth_bytes_per_s == 164 * GB
    assert UB_MEASURED[("npu-npu", Op.READ, False)].bandwidth_bytes_per_s == 167 * GB
    assert UB_MEASURED[("npu-cpu", Op.WRITE, True)].latency_s == pytest.approx(1.9e-6)
    assert UB_MEASURED[("npu-cpu", Op.READ, False)].latency_s == pytest.approx(1.0e-6)


@pytest.mark.parametrize("key", [(path, op) for path in ("npu-npu", "npu-cpu") for op in Op])
def test_inter_node_costs_little_more(key: tuple[str, Op]) -> None:
    # ref 1.2: inter- vs intra-node bandwidth degradation < 3%, latency increase < 1 us.
    inter, intra = UB_MEASURED[(*key, True)], UB_MEASURED[(*key, False)]
    assert 0.97 <= inter.bandwidth_bytes_per_s / intra.bandwidth_bytes_per_s < 1.0
    assert 0 < inter.latency_s - intra.latency_s < 1e-6


def test_dies_of_one_package_use_the_cross_die_link(full: Topology) -> None:
    route = full.route(die(7), die(6), Plane.UB)
    assert route.links == ("d2d/npu3/1to0",)
    assert route.rate_cap_bytes_per_s is None and not route.is_inter_node


def test_rdma_and_vpc_routes(full: Topology) -> None:
    rdma = full.route(die(0), die(700), Plane.RDMA)
    assert rdma.links == ("rdma/die0/tx", "rdma/die700/rx") and rdma.op is None
    vpc = full.route(cpu(0), die(700), Plane.VPC)
    assert vpc.links == ("vpc/node0/tx", "vpc/node43/rx")


@pytest.mark.parametrize(
    ("src", "dst", "plane", "op", "field"),
    [
        (die(0), die(0), Plane.UB, None, "dst"),
        (die(768), die(0), Plane.UB, None, "src.index"),
        (Endpoint("gpu", 0), die(0), Plane.UB, None, "src.kind"),  # type: ignore[arg-type]
        (cpu(0), cpu(5), Plane.UB, None, "dst"),
        (cpu(0), die(5), Plane.UB, Op.WRITE, "op"),
        (cpu(0), die(5), Plane.RDMA, None, "plane"),
        (die(0), die(5), Plane.RDMA, Op.READ, "op"),
        (die(0), die(5), Plane.VPC, None, "dst"),
    ],
)
def test_bad_routes_name_the_field(
    full: Topology, src: Endpoint, dst: Endpoint, plane: Plane, op: Op | None, field: str
) -> None:
    with pytest.raises(RouteError) as err:
        full.route(src, dst, plane, op)
    assert err.value.field == field
