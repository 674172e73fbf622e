"""The pool's Prometheus metrics: per-namespace counters and, per Redis node, memory, keys, evictions
and hit rate (`supernode_kvpool_*`). The pool's capacity is the sum of its masters' LRU caps.

Node figures need Redis round trips, so a background task refreshes a snapshot that scrapes read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supernode.kvpool.store import KvStore, NodeStats
from supernode.runtime.errors import SupernodeError

log = logging.getLogger(__name__)
NODE_STATS_INTERVAL_S = 5.0


class Counters:
    """One namespace's counters; the same figures are exported to Prometheus by `PoolMetrics`."""

    def __init__(self) -> None:
        self.num_hits = 0
        self.num_misses = 0
        self.bytes_written = 0
        self.bytes_read = 0
        self.num_digest_failures = 0


_COUNTERS = (
    ("hits", "num_hits", "Blocks found by Lookup and Get"),
    ("misses", "num_misses", "Blocks asked for and not found"),
    ("bytes_written", "bytes_written", "Payload bytes written to Redis"),
    ("bytes_read", "bytes_read", "Payload bytes read from Redis"),
    ("digest_failures", "num_digest_failures", "Reads whose digest did not match"),
)
_NODE_GAUGES = (
    ("node_up", "is_up", "1 when the node answered the last probe"),
    ("node_used_memory_bytes", "used_memory_bytes", "Memory the node uses (INFO used_memory)"),
    ("node_max_memory_bytes", "max_memory_bytes", "The node's LRU memory cap (0 = none)"),
    ("node_keys", "num_keys", "Keys on the node, every namespace"),
    ("node_evicted_keys", "num_evicted", "Keys the node's LRU evicted since it started"),
)


class PoolMetrics(Collector):
    """Exports every namespace's Counters and the latest node snapshot at scrape time."""

    def __init__(self, counters: dict[str, Counters]) -> None:
        self.counters = counters
        self.nodes: list[NodeStats] = []

    def collect(self) -> Iterator[Metric]:
        for metric, attr, doc in _COUNTERS:
            family = CounterMetricFamily(f"supernode_kvpool_{metric}", doc, labels=["namespace"])
            for namespace, c in self.counters.items():
                family.add_metric([namespace], getattr(c, attr))
            yield family
        rate = GaugeMetricFamily("supernode_kvpool_hit_rate", "Hits / (hits + misses)", labels=["namespace"])
        for namespace, c in self.counters.items():
            asked = c.num_hits + c.num_misses
            rate.add_metric([namespace], c.num_hits / asked if asked else 0.0)
        yield rate
        yield from self._node_families()

    def _node_families(self) -> Iterator[Metric]:
        labels = ["node", "role"]
        for metric, attr, doc in _NODE_GAUGES:
            family = GaugeMetricFamily(f"supernode_kvpool_{metric}", doc, labels=labels)
            for s in self.nodes:
                family.add_metric([s.node, s.role], float(getattr(s, attr)))
            yield family
        rate = GaugeMetricFamily(
            "supernode_kvpool_node_hit_rate", "Blocks found / asked on the node (this service)", labels=labels
        )
        for s in self.nodes:
            asked = s.num_hits + s.num_misses
            rate.add_metric([s.node, s.role], s.num_hits / asked if asked else 0.0)
        yield rate
        masters = [s for s in self.nodes if s.role == "master"]
        yield GaugeMetricFamily(
            "supernode_kvpool_capacity_bytes",
            "The pool's capacity: the sum of its masters' LRU caps",
            value=float(sum(s.max_memory_bytes for s in masters)),
        )
        yield GaugeMetricFamily(
            "supernode_kvpool_used_memory_bytes",
            "Memory used on the pool's masters",
            value=float(sum(s.used_memory_bytes for s in masters)),
        )

    async def refresh(self, store: KvStore) -> None:
        try:
            self.nodes = await store.node_stats()
        except SupernodeError as err:
            log.debug("node stats unavailable: %s", err.message)

    async def refresh_forever(self, store: KvStore, interval_s: float = NODE_STATS_INTERVAL_S) -> None:
        while True:
            await self.refresh(store)
            await asyncio.sleep(interval_s)
