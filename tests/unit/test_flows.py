"""FlowNetwork: hand-computed max-min fair schedules, faults, and agreement with a from-scratch solver."""

from __future__ import annotations

import math
import random

import pytest

from supernode.core.flows import FlowNetwork, LinkDownError
from supernode.core.topology import GB, UB_MEASURED, Endpoint, Op, Plane, Route, Topology


def net_of(**capacities: float) -> FlowNetwork:
    return FlowNetwork(capacities)


def finishes(net: FlowNetwork, now_s: float) -> dict[object, float]:
    return {done.flow_id: done.finish_s for done in net.advance(now_s)}


def test_two_flows_sharing_a_link_each_get_half() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 0.0)
    net.add("y", ["a"], 100, 0.0)
    assert net.rate("x") == net.rate("y") == 5.0
    assert finishes(net, 100.0) == {"x": 20.0, "y": 20.0}


def test_a_flow_bottlenecked_elsewhere_leaves_its_share() -> None:
    net = net_of(a=10.0, b=4.0)
    net.add("x", ["a"], 60, 0.0)
    net.add("y", ["a", "b"], 100, 0.0)
    assert (net.rate("x"), net.rate("y")) == (6.0, 4.0)
    assert finishes(net, 100.0) == {"x": 10.0, "y": 25.0}


def test_rate_cap_leaves_the_rest_to_others() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 0.0, rate_cap=3.0)
    net.add("y", ["a"], 100, 0.0)
    assert (net.rate("x"), net.rate("y")) == (3.0, 7.0)


def test_finish_times_are_recomputed_on_arrival_and_departure() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 0.0)
    assert net.finish_time_estimate("x") == 10.0
    net.add("y", ["a"], 100, 5.0)  # x has 50 left; both at 5 B/s from t=5
    assert net.finish_time_estimate("x") == pytest.approx(15.0)
    assert net.finish_time_estimate("y") == pytest.approx(25.0)
    assert net.next_event_s() == pytest.approx(15.0)
    assert finishes(net, 15.0) == pytest.approx({"x": 15.0})
    assert net.rate("y") == 10.0  # alone again: 50 left at 10 B/s
    assert finishes(net, 30.0) == pytest.approx({"y": 20.0})
    assert net.next_event_s() is None


def test_remove_cancels_and_speeds_up_the_others() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 0.0)
    net.add("y", ["a"], 100, 0.0)
    assert net.remove("x", 4.0)  # y moved 20, 80 left at 10 B/s
    assert not net.remove("x", 4.0)
    assert finishes(net, 100.0) == pytest.approx({"y": 12.0})


def test_latency_is_added_after_the_last_byte_and_links_free_at_end_of_data() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 0.0, latency_s=2.0)
    assert net.finish_time_estimate("x") == 12.0
    net.add("y", ["a"], 100, 10.5)  # x's data has left: y gets the whole link
    assert net.rate("y") == 10.0 and net.rate("x") == 0.0
    assert finishes(net, 11.0) == {}
    assert finishes(net, 12.0) == {"x": 12.0}


def test_no_flow_is_delivered_before_next_delivery_s() -> None:
    net = net_of(a=10.0)
    assert net.next_delivery_s() is None
    net.add("x", ["a"], 100, 0.0, latency_s=2.0)
    net.add("y", ["a"], 200, 0.0, latency_s=0.5)
    # x's data leaves at 20 (both at 5 B/s); y then speeds up and ends at 30: nothing before 20.5
    assert net.next_event_s() == 20.0 and net.next_delivery_s() == 20.5
    assert finishes(net, 20.5) == {}
    assert net.next_delivery_s() == 22.0  # x's delivery is pending now
    assert finishes(net, 22.0) == {"x": 22.0}
    assert net.next_delivery_s() == 30.5  # y's data ends at 30, plus the smallest latency
    assert finishes(net, 31.0) == {"y": 30.5}
    assert net.next_delivery_s() is None


def test_finished_flows_are_kept_until_advance() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 10, 0.0)
    net.add("y", ["a"], 10, 5.0)  # x finished at 1.0 on the way
    assert finishes(net, 5.0) == {"x": 1.0}


def test_zero_bytes_cost_only_latency() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 0, 1.0, latency_s=0.5)
    assert finishes(net, 2.0) == {"x": 1.5}


@pytest.mark.parametrize(
    ("links", "num_bytes", "kwargs"),
    [(["nope"], 1, {}), (["a", "a"], 1, {}), (["a"], -1, {}), ([], 1, {}), (["a"], 1, {"rate_cap": 0.0})],
)
def test_bad_flows_are_refused(links: list[str], num_bytes: float, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        net_of(a=10.0).add("x", links, num_bytes, 0.0, **kwargs)


def test_duplicate_ids_and_time_going_backwards_are_refused() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 5.0)
    with pytest.raises(ValueError, match="flow_id"):
        net.add("x", ["a"], 100, 5.0)
    with pytest.raises(ValueError, match="backwards"):
        net.advance(4.0)


def test_degradation_slows_flows_in_flight() -> None:
    net = net_of(a=10.0)
    net.add("x", ["a"], 100, 0.0)
    net.set_capacity("a", 5.0, 6.0)  # 40 left at 5 B/s
    assert finishes(net, 100.0) == pytest.approx({"x": 14.0})
    with pytest.raises(ValueError):
        net.set_capacity("a", 0.0, 100.0)


def test_link_down_fails_flows_in_flight_and_refuses_new_ones() -> None:
    net = net_of(a=10.0, b=10.0)
    net.add("x", ["a", "b"], 100, 0.0)
    net.add("y", ["b"], 100, 0.0)
    assert net.set_link_down("a", 2.0) == ["x"]
    assert net.rate("y") == 10.0  # x's share on b goes to y
    with pytest.raises(LinkDownError, match="a"):
        net.add("z", ["a"], 100, 3.0)
    net.set_link_up("a", 4.0)
    net.add("z", ["a"], 100, 4.0)
    assert net.link_stats("a").num_flows == 1 and not net.is_down("a")


def test_link_stats_count_bytes_and_utilisation() -> None:
    net = net_of(a=10.0, b=4.0)
    net.add("x", ["a", "b"], 40, 0.0)
    stats = net.link_stats("a")
    assert (stats.load_bytes_per_s, stats.utilisation, stats.num_flows) == (4.0, 0.4, 1)
    net.advance(5.0)
    assert net.link_stats("a").bytes_total == pytest.approx(20.0)
    net.advance(20.0)
    assert net.link_stats("b").bytes_total == pytest.approx(40.0)
    assert net.link_stats("b").utilisation == 0.0


# --- on the supernode topology ---


@pytest.fixture()
def topo() -> Topology:
    return Topology(num_nodes=4)


def start(net: FlowNetwork, flow_id: object, route: Route, num_bytes: float, now_s: float = 0.0) -> None:
    net.add(
        flow_id, route.links, num_bytes, now_s, rate_cap=route.rate_cap_bytes_per_s, latency_s=route.latency_s
    )


@pytest.mark.parametrize(("dst", "is_inter"), [(2, False), (2 + 16 * 3, True)])
def test_a_lone_transfer_gets_the_measured_bandwidth_and_latency(
    topo: Topology, dst: int, is_inter: bool
) -> None:
    net = FlowNetwork(topo.capacities())
    start(net, "x", topo.route(Endpoint("die", 0), Endpoint("die", dst), Plane.UB), 1e9)
    perf = UB_MEASURED[("npu-npu", Op.READ, is_inter)]
    assert net.rate("x") == perf.bandwidth_bytes_per_s  # 164 or 167 GB/s, not the 196 GB/s peak
    assert finishes(net, 1.0)["x"] == pytest.approx(1e9 / perf.bandwidth_bytes_per_s + perf.latency_s)


def test_disjoint_paths_do_not_slow_each_other(topo: Topology) -> None:
    net = FlowNetwork(topo.capacities())
    start(net, "x", topo.route(Endpoint("die", 0), Endpoint("die", 20), Plane.UB), 1e9)
    start(net, "y", topo.route(Endpoint("die", 2), Endpoint("die", 22), Plane.UB), 1e9)
    assert net.rate("x") == net.rate("y") == 164 * GB


def test_flows_sharing_a_die_port_share_its_196_gb_s(topo: Topology) -> None:
    net = FlowNetwork(topo.capacities())
    start(net, "x", topo.route(Endpoint("die", 0), Endpoint("die", 20), Plane.UB), 1e9)
    start(net, "y", topo.route(Endpoint("die", 0), Endpoint("die", 4), Plane.UB), 1e9)
    assert net.rate("x") == net.rate("y") == 98 * GB


def test_node_uplink_binds_when_every_die_and_cpu_sends_out(topo: Topology) -> None:
    net = FlowNetwork(topo.capacities())
    for d in range(16):  # node 0's 16 dies read into node 1: capped at 164 GB/s each
        start(net, f"die{d}", topo.route(Endpoint("die", d), Endpoint("die", 16 + d), Plane.UB), 1e12)
    for c in range(4):  # node 0's CPUs serve node 2's dies: capped at 147 GB/s each
        start(net, f"cpu{c}", topo.route(Endpoint("cpu", c), Endpoint("die", 32 + c), Plane.UB), 1e12)
    # 3136 GB/s uplink / 20 flows = 156.8 > 147: the CPU flows reach their cap, the dies share the rest.
    assert net.rate("cpu0") == 147 * GB
    assert net.rate("die0") == pytest.approx((3136 - 4 * 147) / 16 * GB)
    assert net.link_stats("ub/node0/up").utilisation == pytest.approx(1.0)


# --- against a from-scratch solver ---


def reference_rates(
    flows: dict[object, tuple[tuple[str, ...], float]], caps: dict[str, float]
) -> dict[object, float]:
    """Textbook progressive filling over every flow."""
    rates: dict[object, float] = {}
    active, residual, level = set(flows), dict(caps), 0.0
    while active:
        count: dict[str, int] = {}
        for f in active:
            for link in flows[f][0]:
                count[link] = count.get(link, 0) + 1
        step = min([residual[link] / n for link, n in count.items()] + [flows[f][1] - level for f in active])
        level += step
        for link, n in count.items():
            residual[link] -= step * n
        full = {f for f in active if level >= flows[f][1] * (1 - 1e-9)}
        full |= {f for f in active if any(residual[link] <= 1e-9 * caps[link] for link in flows[f][0])}
        rates.update(dict.fromkeys(full, level))
        active -= full
    return rates


@pytest.mark.parametrize("seed", range(4))
def test_incremental_recompute_matches_a_full_recompute(seed: int) -> None:
    topo, rng = Topology(num_nodes=2), random.Random(seed)
    caps = topo.capacities()
    net, now_s = FlowNetwork(caps), 0.0
    live: dict[object, tuple[tuple[str, ...], float]] = {}
    for flow_id in range(300):
        draw = rng.random()
        if draw < 0.6 or not live:
            src = Endpoint("cpu", rng.randrange(2)) if draw < 0.2 else Endpoint("die", rng.randrange(32))
            dst = Endpoint("die", rng.randrange(32))
            plane = rng.choice([Plane.UB, Plane.UB, Plane.RDMA]) if draw >= 0.2 else Plane.UB
            route = topo.route(src, dst, plane) if src != dst else None
            if route and not any(net.is_down(link) for link in route.links):
                start(net, flow_id, route, rng.randint(1, 100) * 1e8, now_s)
                live[flow_id] = (route.links, route.rate_cap_bytes_per_s or math.inf)
        elif draw < 0.7:
            victim = rng.choice(list(live))
            net.remove(victim, now_s)
            del live[victim]
        elif draw < 0.75:
            link = rng.choice(list(caps))
            net.set_capacity(link, caps[link] * rng.choice([0.25, 0.5, 1.0]), now_s)
        elif draw < 0.77:
            for failed in net.set_link_down(rng.choice(list(caps)), now_s):
                del live[failed]
        else:
            next_s = net.next_event_s() or now_s
            now_s += (next_s - now_s) * rng.choice([0.5, 1.0])
            net.advance(now_s)
        moving = {f: v for f, v in live.items() if net.is_moving(f)}
        current = {link: net.link_stats(link).capacity_bytes_per_s for link in caps}
        for f, expected in reference_rates(moving, current).items():
            assert net.rate(f) == pytest.approx(expected, rel=1e-6)
