"""The pool on Redis Cluster: blocks spread over the masters by hash slot, one pipeline per node.

A block's key `<namespace>:kv:<hash>` has no hash tag, so CRC16(key) mod 16384 picks its slot and the
slot's master holds it: a prompt's blocks scatter over every master, as the paper's EMS spreads blocks
over every node's DRAM by hash. redis-py's asyncio `RedisCluster` keeps the slot map (refreshed on
MOVED and after failures); each multi-key call groups its keys by the master that owns their slot and
sends one pipeline per master, all at once, so a 4,096-block call costs one round trip per node.

Failure contract (a master dies; its replica is promoted `cluster-node-timeout` later):
- a node that fails is retried once after refreshing the slot map (MOVED, a promoted replica);
- keys still unreachable: a Lookup reads them as absent (the cached prefix stops there and the rest is
  recomputed); their writes are dropped; a Get (decode needs those very blocks) keeps retrying with
  fresh slot maps for up to `failover_wait_s`, so it answers from the promoted replica (or reports a
  real miss, and the router recomputes on a healthy cluster) rather than fail mid-failover;
  SET is atomic per key and values are sealed with a digest, so nothing is ever half-written;
- only when no node at all answers does a call fail (UNAVAILABLE), as with a standalone Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline

from supernode.kvpool import frames
from supernode.kvpool.bulk import Buffers, BulkClient
from supernode.kvpool.cluster_nodes import ClusterNodes
from supernode.kvpool.scripts import BlockScripts, is_script_refused, is_stale_slot_map
from supernode.kvpool.store import (
    NodeStats,
    open_direct,
    read_node_stats,
    redis_key,
)
from supernode.runtime.errors import UnavailableError

log = logging.getLogger(__name__)

# A per-key reply that means "this node cannot answer for this key now": refresh the map, retry once.
_RETRYABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ReadOnlyError,
)
_FAILED = object()  # a key whose node could not answer


@dataclass(frozen=True, slots=True)
class _Command:
    """One operation over a node's keys: a batch script (None: none exists) and the single-key
    command a pipeline falls back to."""

    script: Callable[[str, list[str]], Awaitable[list[Any]]] | None  # (node, its keys)
    single: Callable[[Pipeline, str], Any]


RETRY_INTERVAL_S = 0.2  # between slot-map refreshes while a Get waits out a failover


class ClusterKvStore:
    """`KvStore` over Redis Cluster (see the module docstring for placement and failure handling)."""

    def __init__(self, url: str, failover_wait_s: float = 5.0) -> None:
        """`url`: one node's URL, or several comma-separated (seeds: any one alive will do)."""
        self.failover_wait_s = failover_wait_s
        self.nodes = ClusterNodes(url)
        self.num_round_trips = 0  # node pipelines sent (tests check one per node per call)
        self.num_dropped_writes = 0
        self.num_failed_reads = 0
        self._hits: defaultdict[str, int] = defaultdict(int)
        self._misses: defaultdict[str, int] = defaultdict(int)
        self._scripts = BlockScripts()
        self.is_scripted = True  # False once a node refused the scripts (Redis < 7.0)
        self._buffers = Buffers(frames.room_for)  # the direct readers' buffers, shared by every node's
        self._direct: dict[str, BulkClient | None] = {}  # by node, made on first use

    # -- KvStore

    async def exists_many(self, namespace: str, keys: Sequence[str]) -> list[bool]:
        command = _Command(lambda n, ks: self._scripts.exists(self._client(n), ks), lambda p, k: p.exists(k))
        replies = await self._per_key([redis_key(namespace, k) for k in keys], command)
        return [r is not _FAILED and bool(r) for r in replies]

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        full = [redis_key(namespace, k) for k in keys]
        command = _Command(self._get_script, lambda p, k: p.get(k))
        replies = await self._per_key(full, command, wait_s=self.failover_wait_s)
        return [None if r is _FAILED else r for r in replies]

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        full = [redis_key(namespace, k) for k, _ in items]
        values: dict[str, bytes] = {}
        for key, (_, value) in zip(full, items, strict=True):
            values.setdefault(key, value)  # a key given twice is written once, as SET NX would
        command = _Command(
            lambda n, ks: self._scripts.put_nx(self._client(n), ks, [values[k] for k in ks]),
            lambda p, k: p.set(k, values[k], nx=True),
        )
        unique = list(values)
        replies = await self._per_key(unique, command, is_read=False)
        written = {k: r is not _FAILED and bool(r) for k, r in zip(unique, replies, strict=True)}
        return [written.pop(k, False) for k in full]  # one answer per item; a repeat was not written

    def recycle(self, values: Sequence[bytes | None]) -> None:
        self._buffers.recycle(values)

    async def _get_script(self, node: str, keys: list[str]) -> list[Any]:
        """The GET script on `node`, its payloads read by the direct reader where it applies."""
        if node not in self._direct:
            host, _, port = node.rpartition(":")
            options = self.nodes.node_kwargs | {"host": host, "port": int(port)}
            self._direct[node] = open_direct(options, self._buffers)
        direct = self._direct[node]
        if direct is None:
            return await self._scripts.get(self._client(node), keys)
        return await self._scripts.get_direct(direct, keys)

    async def delete(self, namespace: str, key: str) -> None:
        command = _Command(None, lambda p, k: p.delete(k))
        await self._per_key([redis_key(namespace, key)], command, is_read=False)

    async def num_keys(self, namespace: str) -> int:
        await self.nodes.ready()
        count = 0
        for node in self.nodes.primaries():
            try:
                async for _ in self._client(node).scan_iter(match=f"{namespace}:kv:*", count=1000):
                    count += 1
            except redis.exceptions.RedisError:
                continue  # a node down counts as holding nothing
        return count

    async def memory_info(self) -> tuple[int, int]:
        masters = [s for s in await self.node_stats() if s.role == "master"]
        return sum(s.used_memory_bytes for s in masters), sum(s.num_evicted for s in masters)

    async def node_stats(self) -> list[NodeStats]:
        nodes = sorted((await self.nodes.topology()).items())
        return list(
            await asyncio.gather(
                *(
                    read_node_stats(self._client(name), name, role, self._hits[name], self._misses[name])
                    for name, role in nodes
                )
            )
        )

    async def ping(self) -> None:
        await self.nodes.ready()
        replies = await asyncio.gather(
            *(self._client(node).ping() for node in self.nodes.primaries()), return_exceptions=True
        )
        if all(isinstance(r, BaseException) for r in replies):
            raise UnavailableError("kv pool: no redis cluster node answers", retry_after_s=1.0)

    async def close(self) -> None:
        for direct in self._direct.values():
            if direct is not None:
                direct.close()
        self._direct.clear()
        await self.nodes.close()

    def masters_of(self, namespace: str, keys: Sequence[str]) -> list[str]:
        """The master (host:port) currently holding each key, from the client's slot map."""
        return [self.nodes.master(redis_key(namespace, k)) for k in keys]

    # -- the per-node pipelines

    async def _per_key(
        self,
        keys: list[str],
        command: _Command,
        *,
        is_read: bool = True,
        wait_s: float = 0.0,
    ) -> list[Any]:
        """One command per key, pipelined per master; a node that fails is retried once after a
        slot-map refresh (and again every `RETRY_INTERVAL_S` for up to `wait_s`), then its keys are
        left `_FAILED`."""
        if not keys:
            return []
        await self.nodes.ready()
        replies: list[Any] = [_FAILED] * len(keys)
        todo = list(range(len(keys)))
        answered: set[str] = set()
        failed: set[str] = set()
        deadline = time.monotonic() + wait_s
        for attempt in itertools.count():
            todo = await self._attempt(keys, todo, command, replies, answered, failed, is_read)
            if not todo:
                return replies
            if attempt >= 1 and (self._is_down(answered, failed) or time.monotonic() >= deadline):
                break
            if attempt >= 1:
                await asyncio.sleep(RETRY_INTERVAL_S)
            await self.nodes.refresh()
        if self._is_down(answered, failed):
            raise UnavailableError("kv pool: no redis cluster node answers", retry_after_s=1.0)
        self._give_up(keys, todo, is_read)
        return replies

    async def _attempt(
        self,
        keys: list[str],
        todo: list[int],
        command: _Command,
        replies: list[Any],
        answered: set[str],
        failed: set[str],
        is_read: bool,
    ) -> list[int]:
        """Sends the `todo` keys' commands, one pipeline per master at once; fills `replies`, notes
        which nodes answered or failed, and returns the keys to try again."""
        groups: defaultdict[str, list[int]] = defaultdict(list)
        master = self.nodes.master
        for i in todo:
            groups[master(keys[i])].append(i)
        outcomes = await asyncio.gather(
            *(self._pipeline(node, [keys[i] for i in idx], command) for node, idx in groups.items())
        )
        again: list[int] = []
        for (node, idx), outcome in zip(groups.items(), outcomes, strict=True):
            if isinstance(outcome, _RETRYABLE) and isinstance(outcome, redis.exceptions.ResponseError):
                answered.add(node)  # it answered, for keys it no longer serves (MOVED, ...): retry them
                again.extend(idx)
                continue
            if isinstance(outcome, BaseException):
                failed.add(node)
                again.extend(idx)
                continue
            answered.add(node)
            num_found = num_answered = 0
            for i, reply in zip(idx, outcome, strict=True):
                if isinstance(reply, BaseException):
                    if isinstance(reply, _RETRYABLE):
                        again.append(i)
                    else:
                        log.warning("redis node %s: %s", node, reply)
                    continue
                replies[i] = reply
                num_answered += 1
                num_found += 1 if reply else 0
            if is_read:
                self._hits[node] += num_found
                self._misses[node] += num_answered - num_found
        return again

    def _is_down(self, answered: set[str], failed: set[str]) -> bool:
        """True when no master answered and every master known failed: the whole cluster is away."""
        return not answered and set(self.nodes.primaries()) <= failed

    async def _pipeline(self, node: str, keys: list[str], command: _Command) -> list[Any] | BaseException:
        """The node's replies to `command` over `keys` (one script call, or a pipeline of single-key
        commands), or the error that kept the node from answering."""
        if not node:
            return redis.exceptions.ClusterDownError("slot not covered")
        client = self._client(node)
        self.num_round_trips += 1
        try:
            if command.script is not None and self.is_scripted:
                try:
                    return await command.script(node, keys)
                except redis.exceptions.ResponseError as err:
                    if is_stale_slot_map(err):  # retried after a slot-map refresh, like MOVED
                        return redis.exceptions.TryAgainError(str(err))
                    if not is_script_refused(err):
                        raise
                    log.warning("redis node %s refused the pool's scripts (%s); using pipelines", node, err)
                    self.is_scripted = False
            pipe = client.pipeline(transaction=False)
            for key in keys:
                command.single(pipe, key)
            return list(await pipe.execute(raise_on_error=False))
        except redis.exceptions.RedisError as err:
            log.debug("redis node %s failed a batch of %d: %s", node, len(keys), err)
            return err

    def _give_up(self, keys: list[str], failed: list[int], is_read: bool) -> None:
        if is_read:
            self.num_failed_reads += len(failed)
            for i in failed:
                self._tally(self.nodes.master(keys[i]), False)
        else:
            self.num_dropped_writes += len(failed)
        log.warning(
            "%d of %d keys unreachable (%s): %s", len(failed), len(keys),
            "read as misses" if is_read else "writes dropped", "a cluster node is failing over?",
        )  # fmt: skip

    def _client(self, node: str) -> aioredis.Redis:
        return self.nodes.client(node)

    def _tally(self, node: str, hit: bool) -> None:
        if hit:
            self._hits[node] += 1
        else:
            self._misses[node] += 1
