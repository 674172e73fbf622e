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
