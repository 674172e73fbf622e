from __future__ import annotations

from supernode.core.policy import WorkerSnapshot, decode_order, prefill_order


def w(addr, inflight=0, waiting=0, used=0, cap=0, healthy=True, draining=False) -> WorkerSnapshot:
    return WorkerSnapshot(addr, healthy, draining, inflight, waiting, used, cap)


def test_prefill_paper_policy_picks_least_loaded_available():
    workers = [
        w("a", inflight=3),
        w("b", inflight=1, waiting=1),
        w("c", healthy=False),
        w("d", draining=True),
    ]
    assert prefill_order(workers) == [1, 0]


def test_prefill_round_robin_and_kv_aware():
    workers = [w("a"), w("b"), w("c", inflight=5)]
    assert prefill_order(workers, "round_robin", counter=1) == [1, 2, 0]
    assert prefill_order(workers, "kv_aware", affinity=2) == [2, 0, 1]


def test_decode_prefers_room_then_most_free():
    workers = [w("a", used=90, cap=100), w("b", used=10, cap=100), w("c", used=0, cap=100, healthy=False)]
    assert decode_order(workers, need_kv_tokens=20) == [1, 0]
    assert decode_order(workers, need_kv_tokens=95)[0] == 1


def test_affinity_table_is_lru_bounded():
    from supernode.core.policy import AffinityTable

    table = AffinityTable(2)
    table.put("a", 0)
    table.put("b", 1)
    assert table.get("a") == 0
    table.put("c", 2)  # "a" was used after "b"? no: get does not refresh; "a" is oldest
    assert table.get("a") is None and table.get("b") == 1 and table.get("c") == 2 and len(table) == 2


# -- fault-aware routing


def test_instances_behind_faults_maps_down_links_to_the_lease_holders():
    from supernode.core.policy import instances_behind_faults
    from supernode.fabric.faults import FaultTable
    from supernode.fabric.leases import LeaseTable

    leases = LeaseTable(num_nodes=4, ttl_s=10.0)
    leases.lease("decode-0", "decode", 2)  # dies 0, 1 (node 0)
    leases.lease("prefill-0", "prefill", 16)  # dies 2..17: node 0 and die 16, 17 on node 1
    leases.lease("prefill-1", "prefill", 16)  # dies 18..33: node 1 and node 2
    table = FaultTable()
    assert instances_behind_faults(table.active.values(), leases.leases.values()) == frozenset()
    table.add(["rdma/die1/rx"], 0.0, 0.0, 30.0)  # one port of decode-0's second die
    table.add(["ub/node2/up", "ub/node2/down"], 0.5, 0.0, 30.0)  # degraded, not down
    assert instances_behind_faults(table.active.values(), leases.leases.values()) == {"decode-0"}
    assert instances_behind_faults(table.active.values(), leases.leases.values(), 0.5) == {
        "decode-0",
        "prefill-1",
    }


def test_node_fault_downs_every_instance_with_a_die_there():
    from supernode.core.policy import instances_behind_faults
    from supernode.core.topology import Topology
    from supernode.v1 import fabric_pb2

    topology = Topology(num_nodes=4)
    fault = fabric_pb2.Fault(link_ids=list(topology.links_of_node(1)), bandwidth_factor=0.0)
    leases = [
        fabric_pb2.WorkerLease(worker_id="a", dies=[0, 1]),
        fabric_pb2.WorkerLease(worker_id="b", dies=[15, 16]),  # straddles nodes 0 and 1
        fabric_pb2.WorkerLease(worker_id="c", dies=[40, 41]),
    ]
    assert instances_behind_faults([fault], leases) == {"b"}


def test_selectors_skip_instances_marked_behind_a_fault():
    from supernode.core.policy import mark_behind_faults

    workers = [
        WorkerSnapshot("h:1", True, False, 0, 0, 0, 100, worker_id="decode-0"),
        WorkerSnapshot("h:2", True, False, 5, 0, 50, 100, worker_id="decode-1"),
        WorkerSnapshot("h:3", True, False, 0, 0, 0, 0),  # no id known: matched by address
    ]
    marked = mark_behind_faults(workers, frozenset({"decode-0", "h:3"}))
    assert [w.is_behind_fault for w in marked] == [True, False, True]
    assert decode_order(marked, need_kv_tokens=10) == [1]
    assert prefill_order(marked) == [1]
    assert decode_order(mark_behind_faults(marked, frozenset()), 10) == [0, 1, 2]
