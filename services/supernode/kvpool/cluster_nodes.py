"""Redis Cluster's nodes as the pool's cluster store sees them: the slot map, a client per node, and
the cluster's topology (masters and replicas).

redis-py's asyncio `RedisCluster` keeps the slot map; a key's master is read from it directly (a pool
key has no hash tag, so its slot is the CRC16 of the whole key). The map is re-read after MOVED or a
failure, at most one refresh at a time, and a fresh one is reused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from binascii import crc_hqx
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

from supernode.kvpool.resp import use_fast_packing
from supernode.kvpool.store import REDIS_OPTIONS, retry_once
from supernode.runtime.errors import UnavailableError

log = logging.getLogger(__name__)

SLOTS = 16384  # Redis Cluster's hash slots
MIN_REFRESH_INTERVAL_S = 0.1


class ClusterNodes:
    def __init__(self, url: str) -> None:
        """`url`: one node's URL, or several comma-separated (seeds: any one alive will do)."""
        first, *others = split_urls(url)
        seeds = [ClusterNode(*_host_port(u)) for u in others]
        self.cluster = RedisCluster.from_url(
            first, startup_nodes=seeds or None, retry=retry_once(), **REDIS_OPTIONS
        )
        self.node_kwargs = _node_kwargs(first)  # credentials and TLS, for the per-node clients
        self._clients: dict[str, aioredis.Redis] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self._is_ready = False

    def master(self, key: str) -> str:
        """host:port of the key's master; "" when no node covers its slot (the call then fails over)."""
        # A pool key has no hash tag (the namespace allows no braces), so its slot is the CRC16 of all
        # of it: computed here directly, as redis-py's keyslot() costs 1.8 us a key.
        slot = self.cluster.keyslot(key) if "{" in key else crc_hqx(key.encode(), 0) % SLOTS
        nodes = self.cluster.nodes_manager.slots_cache.get(slot)
        return str(nodes[0].name) if nodes else ""

    def client(self, node: str) -> aioredis.Redis:
        client = self._clients.get(node)
        if client is None:
            host, _, port = node.rpartition(":")
            options = REDIS_OPTIONS | self.node_kwargs
            client = aioredis.Redis(host=host, port=int(port), retry=retry_once(), **options)
            use_fast_packing(client)
            self._clients[node] = client
        return client

    def primaries(self) -> list[str]:
        """host:port of every master in the slot map."""
        return [node.name for node in self.cluster.get_primaries()]

    async def ready(self) -> None:
        if self._is_ready:
            return
        try:
            await self.cluster.initialize()
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as err:
            raise UnavailableError("kv pool: redis cluster unreachable", retry_after_s=1.0) from err
        self._is_ready = True

    async def refresh(self) -> None:
        """Re-reads the slot map from the cluster (after MOVED or a node failure); at most one
        refresh runs at a time and a fresh map is reused."""
        started = time.monotonic()
        async with self._refresh_lock:
            if self._refreshed_at >= started - MIN_REFRESH_INTERVAL_S:
                return
            try:
                await self.cluster.nodes_manager.initialize()
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as err:
                log.warning("redis cluster slot map refresh failed: %s", err)
            self._refreshed_at = time.monotonic()

    async def topology(self) -> dict[str, str]:
        """host:port -> "master" / "replica" for every node the cluster knows (CLUSTER NODES, which
        unlike the slot map also lists replicas that hold no data yet and nodes that failed)."""
        await self.ready()
        for primary in self.primaries():
            try:
                table = await self.client(primary).execute_command("CLUSTER", "NODES")
            except redis.exceptions.RedisError:
                continue
            return _parse_nodes(table.decode() if isinstance(table, bytes) else str(table))
        return {n.name: _role(n) for n in self.cluster.get_nodes()}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.cluster.aclose()


def _parse_nodes(table: str) -> dict[str, str]:
    nodes = {}
    for fields in (line.split() for line in table.splitlines()):
        if len(fields) >= 8 and "noaddr" not in fields[2]:
            nodes[fields[1].split("@")[0]] = "master" if "master" in fields[2] else "replica"
    return nodes


def _role(node: Any) -> str:
    return "master" if getattr(node, "server_type", "primary") == "primary" else "replica"


def split_urls(url: str) -> list[str]:
    """The URLs of a comma-separated list (cluster seeds); raises ValueError when there is none."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError("redis_url: must name at least one redis:// or rediss:// URL")
    return urls


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return parsed.hostname or "localhost", parsed.port or 6379


def _node_kwargs(url: str) -> dict[str, Any]:
    """Credentials and TLS from the URL, for the per-node clients (host and port come from the map)."""
    from redis.asyncio.connection import parse_url

    kwargs: dict[str, Any] = dict(parse_url(url))
    for name in ("host", "port", "db", "path", *REDIS_OPTIONS):
        kwargs.pop(name, None)
    return kwargs
