"""The Redis stores behind `KvStore`, standalone and cluster, against real redis-server processes:
batched calls, placement over the masters, per-node stats, Redis restarts and a master failover."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import redis.exceptions
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supernode.kvpool.cluster_store import ClusterKvStore
from supernode.kvpool.metrics import PoolMetrics
from supernode.kvpool.scripts import BlockScripts, is_script_refused, is_stale_slot_map
from supernode.kvpool.store import KvStore, RedisKvStore
from supernode.kvpool.stores import open_store
from supernode.processes import spawn_redis
from supernode.runtime.errors import UnavailableError
from tests.conftest import free_port

PAYLOAD = b"\x5a" * 4096


def keys_for(n: int, salt: int = 0) -> list[str]:
    return [f"{salt:08x}{i:024x}" for i in range(n)]


@pytest.fixture(params=["standalone", "cluster"])
async def store(request, redis_url):
    url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_url
    s = await open_store(url, "auto")
    assert isinstance(s, ClusterKvStore) == (request.param == "cluster"), "auto mode asks the server"
    yield s
    await s.close()


async def test_a_4096_block_call_round_trips_once_per_node(store: KvStore, redis_cluster):
    keys = keys_for(4096, salt=1)
    ns = f"big{time.monotonic_ns()}"
    trips_before = getattr(store, "num_round_trips", 0)
    assert all(await store.put_many(ns, [(k, PAYLOAD) for k in keys]))
    assert await store.get_many(ns, keys) == [PAYLOAD] * len(keys)
    assert await store.exists_many(ns, [*keys[:10], *keys_for(5, salt=2)]) == [True] * 10 + [False] * 5
    assert await store.num_keys(ns) == 4096
    if isinstance(store, ClusterKvStore):
        num_masters = len(redis_cluster.masters())
        assert store.num_round_trips - trips_before == 3 * num_masters, "one pipeline per master per call"
        owners = store.masters_of(ns, keys)
        assert len(set(owners)) == num_masters
        assert min(owners.count(m) for m in set(owners)) > 4096 // num_masters * 0.8, "spread by hash slot"


async def test_a_key_given_twice_in_one_call_is_written_once(store: KvStore):
    ns = f"dup{time.monotonic_ns()}"
    a, b = keys_for(2, salt=4)
    assert await store.put_many(ns, [(a, b"first"), (b, b"other"), (a, b"second")]) == [True, True, False]
    assert await store.get_many(ns, [a, b, a]) == [b"first", b"other", b"first"]


async def test_namespaces_do_not_share_keys(store: KvStore):
    key = keys_for(1, salt=3)
    assert await store.put_many("ns-a", [(key[0], b"a")]) == [True]
    assert await store.put_many("ns-a", [(key[0], b"again")]) == [False], "content-addressed: stored once"
    assert await store.get_many("ns-b", key) == [None]
    assert await store.put_many("ns-b", [(key[0], b"b")]) == [True]
    assert await store.get_many("ns-a", key) == [b"a"]
    await store.delete("ns-a", key[0])
    assert await store.get_many("ns-a", key) == [None] and await store.get_many("ns-b", key) == [b"b"]


@pytest.mark.parametrize("is_scripted", [True, False], ids=["scripts", "pipelines"])
async def test_batches_by_script_and_by_pipeline_agree(store: KvStore, is_scripted: bool):
    """A batch is one script call per node; servers that cannot run the scripts get pipelines of
    single-key commands. Both give the same answers, key by key."""
    assert isinstance(store, RedisKvStore | ClusterKvStore)
    store.is_scripted = is_scripted
    ns = f"paths{time.monotonic_ns()}"
    keys = keys_for(300, salt=9)
    values = [bytes([i % 251]) * (100 + i) for i in range(300)]
    assert await store.put_many(ns, list(zip(keys[:200], values[:200], strict=True))) == [True] * 200
    again = await store.put_many(ns, list(zip(keys[100:], [b"x"] * 200, strict=True)))
    assert again == [False] * 100 + [True] * 100, "present keys are not overwritten"
    absent = keys_for(3, salt=10)
    assert await store.get_many(ns, [absent[0], *keys[:200], absent[1]]) == [None, *values[:200], None]
    assert await store.get_many(ns, keys[200:]) == [b"x"] * 100
    assert await store.exists_many(ns, [keys[5], absent[2], keys[299]]) == [True, False, True]
    assert await store.put_many(ns, []) == [] and await store.get_many(ns, []) == []
    assert store.is_scripted == is_scripted


async def test_a_server_without_scripting_gets_pipelines(tmp_path: Path):
    """Managed Redis services may disable scripting (here EVALSHA is renamed away): the store falls
    back to pipelines for good and loses nothing."""
    port = free_port()
    no_scripts = ["--rename-command", "EVALSHA", "", "--rename-command", "EVAL", ""]
    proc = spawn_redis(port, "64mb", str(tmp_path), tmp_path / "redis.log", no_scripts)
    store = RedisKvStore(f"redis://127.0.0.1:{port}/0")
    try:
        keys = keys_for(20, salt=11)
        assert await store.put_many("s", [(k, PAYLOAD) for k in keys]) == [True] * 20
        assert not store.is_scripted
        assert await store.exists_many("s", [*keys[:2], *keys_for(1, salt=12)]) == [True, True, False]
        assert await store.get_many("s", keys) == [PAYLOAD] * 20
    finally:
        await store.close()
        proc.kill()
        proc.wait()


async def test_a_stale_slot_map_is_retried_not_taken_for_a_refusal(redis_cluster, monkeypatch):
    """Keys travel as script arguments, so a node that no longer serves a key answers with an error,
    not MOVED: the store must refresh its map and retry, and keep using scripts."""
    store = ClusterKvStore(redis_cluster.url)
    try:
        ns = f"stale{time.monotonic_ns()}"
        keys = keys_for(30, salt=13)
        assert all(await store.put_many(ns, [(k, PAYLOAD) for k in keys]))
        owners = store.masters_of(ns, keys)
        wrong = owners[0]
        foreign = [k for k, owner in zip(keys, owners, strict=True) if owner != wrong]
        with pytest.raises(redis.exceptions.ResponseError) as err:
            await BlockScripts().get(store._client(wrong), [f"{ns}:kv:{foreign[0]}"])
        assert is_stale_slot_map(err.value) and not is_script_refused(err.value), err.value
        num_calls = 0
        right = store.nodes.master

        def stale_map(key: str) -> str:  # the first attempt sends every key to one master
            nonlocal num_calls
            num_calls += 1
            return wrong if num_calls <= len(keys) else right(key)

        monkeypatch.setattr(store.nodes, "master", stale_map)
        assert await store.get_many(ns, keys) == [PAYLOAD] * len(keys)
        assert num_calls > len(keys), "a second attempt ran"
        assert store.is_scripted, "a stale map is not a server without scripting"
    finally:
        await store.close()


def test_only_a_refusal_switches_to_pipelines():
    assert is_script_refused(redis.exceptions.ResponseError("ERR unknown command 'EVALSHA'"))
    assert is_script_refused(redis.exceptions.ResponseError("ERR Unexpected flag in script shebang"))
    for passing in (
        redis.exceptions.MovedError("3999 127.0.0.1:6381"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN"),
        redis.exceptions.ConnectionError("gone"),
    ):
        assert not is_script_refused(passing), passing


async def test_node_metrics_and_capacity_is_the_sum_of_the_masters(store: KvStore):
    ns = f"m{time.monotonic_ns()}"
    keys = keys_for(64, salt=4)
    await store.put_many(ns, [(k, PAYLOAD) for k in keys])
    await store.get_many(ns, [*keys, *keys_for(8, salt=5)])
    metrics = PoolMetrics({})
    await metrics.refresh(store)
    registry = CollectorRegistry()
    registry.register(metrics)
    samples = [
        s for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples
    ]
    by_name: dict[str, list] = {}
    for s in samples:
        by_name.setdefault(s.name, []).append(s)
    masters = [s for s in by_name["supernode_kvpool_node_max_memory_bytes"] if s.labels["role"] == "master"]
    expected_masters = 3 if isinstance(store, ClusterKvStore) else 1
    assert len(masters) == expected_masters
    replicas = [
        s for s in by_name["supernode_kvpool_node_used_memory_bytes"] if s.labels["role"] == "replica"
    ]
    assert len(replicas) == (3 if isinstance(store, ClusterKvStore) else 0)
    assert by_name["supernode_kvpool_capacity_bytes"][0].value == sum(s.value for s in masters) > 0
    assert all(s.value == 1 for s in by_name["supernode_kvpool_node_up"])
    assert sum(s.value for s in by_name["supernode_kvpool_node_keys"] if s.labels["role"] == "master") >= 64
    rates = [s.value for s in by_name["supernode_kvpool_node_hit_rate"] if s.labels["role"] == "master"]
    assert all(0 < r <= 1 for r in rates), rates


async def test_a_redis_restart_costs_only_the_calls_made_while_it_is_down(tmp_path: Path):
    """Pooled connections to the old process are stale after a restart: the store health-checks and
    retries them once, so the first call after the restart succeeds."""
    port = free_port()
    proc = spawn_redis(port, "64mb", str(tmp_path), tmp_path / "redis.log")
    store = RedisKvStore(f"redis://127.0.0.1:{port}/0")
    try:
        await asyncio.gather(*(store.put_many("r", [(k, b"v")]) for k in keys_for(8, salt=6)))
        proc.kill()
        proc.wait()
        started = time.monotonic()
        with pytest.raises(UnavailableError) as err:
            await store.get_many("r", keys_for(1, salt=6))
        assert time.monotonic() - started < 5.0, "an outage fails fast"
        assert str(port) not in err.value.message, "no host or port in a client-facing message"
        proc = spawn_redis(port, "64mb", str(tmp_path), tmp_path / "redis.log")
        assert await store.put_many("r", [(keys_for(1, salt=7)[0], b"v")]) == [True]
        assert await store.get_many("r", keys_for(1, salt=6)) == [None], "memory only: back empty"
    finally:
        await store.close()
        proc.kill()
        proc.wait()


async def replicated(masters: list[int]) -> None:
    """Returns once every master's replicas have acknowledged all it has written (they report their
    offset about once a second), instead of hoping a fixed sleep was long enough."""
    for _ in range(500):  # a guard against a hang (5 s)
        infos = [redis.Redis(port=port).info("replication") for port in masters]
        if all(
            info["connected_slaves"] > 0
            and all(
                info[f"slave{i}"]["offset"] == info["master_repl_offset"]
                for i in range(info["connected_slaves"])
            )
            for info in infos
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"replicas behind their masters: {infos}")


async def test_a_master_failover_reads_as_misses_drops_writes_then_recovers(redis_cluster_factory):
    cluster = await asyncio.to_thread(redis_cluster_factory)
    store = ClusterKvStore(cluster.url)
    keys = keys_for(600, salt=8)
    try:
        assert all(await store.put_many("f", [(k, PAYLOAD) for k in keys]))
        await replicated(cluster.masters())  # replication to the replicas is asynchronous
        victim = f"127.0.0.1:{cluster.masters()[0]}"
        on_victim = {k for k, owner in zip(keys, store.masters_of("f", keys), strict=True) if owner == victim}
        assert 100 < len(on_victim) < 300
        cluster.kill(int(victim.rsplit(":", 1)[1]))

        # Before the replica is promoted: writes to the failing master are dropped, others land...
        fresh = keys_for(300, salt=9)
        written = await store.put_many("f", [(k, PAYLOAD) for k in fresh])
        assert not all(written) and any(written) and store.num_dropped_writes > 0
        # ...a Lookup reads the failing master's blocks as misses at once (the prefix is recomputed)...
        present = await store.exists_many("f", keys)
        assert present == [k not in on_victim for k in keys]
        # ...and a Get waits out the failover, then reads them from the promoted replica.
        started = time.monotonic()
        got = await store.get_many("f", keys)
        assert time.monotonic() - started < store.failover_wait_s + 2
        assert sum(v == PAYLOAD for v in got) >= len(keys) - 5, "the promoted replica serves the old blocks"
        assert all(v in (None, PAYLOAD) for v in got), "never a wrong value"

        await asyncio.to_thread(cluster.wait_ok, 30.0)
        assert victim not in {f"127.0.0.1:{p}" for p in cluster.masters()}, "its replica took over"
        assert all(await store.put_many("f", [(k, PAYLOAD) for k in keys_for(50, salt=10)]))
        # A pool service starting now finds the cluster through any live seed, the dead one listed first.
        seeds = [f"redis://{victim}/0", *(u for u in cluster.seed_urls if victim not in u)]
        late = await open_store(",".join(seeds), "auto")
        try:
            assert sum(v == PAYLOAD for v in await late.get_many("f", keys)) >= len(keys) - 5
        finally:
            await late.close()
    finally:
        await store.close()


async def test_several_urls_are_refused_for_one_redis(redis_url):
    with pytest.raises(ValueError, match="redis_url"):
        await open_store(f"{redis_url},{redis_url}", "standalone")


async def test_a_cluster_with_no_node_left_is_unavailable(redis_cluster_factory):
    cluster = await asyncio.to_thread(redis_cluster_factory, 3, 0)
    store = ClusterKvStore(cluster.url)
    try:
        await store.put_many("u", [(keys_for(1)[0], b"v")])
        for node in cluster.nodes:
            cluster.kill(node.port)
        with pytest.raises(UnavailableError):
            await store.get_many("u", keys_for(30))
    finally:
        await store.close()
