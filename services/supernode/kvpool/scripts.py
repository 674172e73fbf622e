"""Batched block commands as Redis server-side scripts: one command per node for a whole batch.

A pipeline of N `SET key value NX` costs redis-py N packed commands, N parsed replies and N
timeouts in Python (about 20 us of pool-service CPU each); one `EVALSHA` over N keys costs one of
each, and the per-key loop runs in Redis (in each node's own process, so a cluster spreads it). The
scripts run atomically on one node: a batch's writes on a node all happen or none do.

The keys travel as arguments, not as declared KEYS: a cluster refuses a command whose declared keys
span hash slots (CROSSSLOT) even when one node serves them all, while `allow-cross-slot-keys`
(Redis 7.0+) lets a script touch keys of any slots its node serves. The cluster store groups keys per
master, so they are all local; a key the node no longer serves (its slot moved, a failover) fails the
whole script with an error, and the store refreshes its slot map and retries.
Servers older than 7.0 refuse the flags; `is_script_refused` tells the stores to fall back to
pipelines of single-key commands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.typing import EncodableT

from supernode.kvpool.bulk import BulkClient

# 1 where the key was absent and is now written, 0 where it was already present.
_PUT_NX = """#!lua flags=allow-cross-slot-keys
local stored = {}
local n = #ARGV / 2
for i = 1, n do
  stored[i] = redis.call('SET', ARGV[i], ARGV[n + i], 'NX') and 1 or 0
end
return stored
"""
# Each key's value; nil where absent (GET answers false, which the reply turns into nil).
_GET = """#!lua flags=no-writes,allow-cross-slot-keys
local values = {}
for i, key in ipairs(ARGV) do
  values[i] = redis.call('GET', key)
end
return values
"""
# 1 where the key exists, else 0.
_EXISTS = """#!lua flags=no-writes,allow-cross-slot-keys
local found = {}
for i, key in ipairs(ARGV) do
  found[i] = redis.call('EXISTS', key)
end
return found
"""


class _Script:
    """A Lua script run by its SHA1 on the client a call names, loaded there first when the server
    answers NOSCRIPT. redis-py's AsyncScript does the same but is built around a default client;
    these scripts have none (a cluster runs them on whichever node holds the keys)."""

    def __init__(self, text: str) -> None:
        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest()

    async def __call__(self, args: Sequence[EncodableT], client: aioredis.Redis) -> Any:
        try:
            return await client.evalsha(self.sha, 0, *args)
        except redis.exceptions.NoScriptError:
            self.sha = await client.script_load(self.text)
            return await client.evalsha(self.sha, 0, *args)


class BlockScripts:
    """The three scripts, loaded on first use on each server they run on (EVALSHA, then EVAL
    once on NOSCRIPT: a restarted node has forgotten them)."""

    def __init__(self) -> None:
        self._put = _Script(_PUT_NX)
        self._get = _Script(_GET)
        self._exists = _Script(_EXISTS)

    async def put_nx(self, client: aioredis.Redis, keys: Sequence[str], values: Sequence[bytes]) -> list[Any]:
        return list(await self._put(args=[*keys, *values], client=client))

    async def get(self, client: aioredis.Redis, keys: Sequence[str]) -> list[Any]:
        return list(await self._get(args=keys, client=client))

    async def exists(self, client: aioredis.Redis, keys: Sequence[str]) -> list[Any]:
        return list(await self._exists(args=keys, client=client))

    async def get_direct(self, client: BulkClient, keys: Sequence[str]) -> list[Any]:
        """`get` through the direct payload reader (EVAL once where the node lacks the script)."""
        try:
            return await client.call("EVALSHA", self._get.sha, 0, *keys)
        except redis.exceptions.NoScriptError:
            return await client.call("EVAL", _GET, 0, *keys)


# What a cluster node says when a script touches a key of a slot it does not serve (the slot moved,
# a failover demoted it) or while the cluster is down: the store's slot map is stale, retry.
_STALE_MAP_ERRORS = ("non local key", "cluster is down")


def is_stale_slot_map(err: BaseException) -> bool:
    """True for a script error meaning "ask another node" (keys passed as arguments get no MOVED)."""
    return isinstance(err, redis.exceptions.ResponseError) and any(m in str(err) for m in _STALE_MAP_ERRORS)


def is_script_refused(err: BaseException) -> bool:
    """True for the error of a server that cannot run these scripts (no script flags before 7.0,
    or scripting disabled), as opposed to a node failing or a slot moving."""
    return (
        isinstance(err, redis.exceptions.ResponseError)
        and not is_stale_slot_map(err)
        and not isinstance(
            err,
            redis.exceptions.MovedError
            | redis.exceptions.AskError
            | redis.exceptions.TryAgainError
            | redis.exceptions.ClusterDownError
            | redis.exceptions.ReadOnlyError
            | redis.exceptions.BusyLoadingError
            | redis.exceptions.OutOfMemoryError,
        )
    )
