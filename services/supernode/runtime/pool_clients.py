"""Workers' client for several stateless KV pool services: calls spread round-robin, failover on UNAVAILABLE.

Every pool call is idempotent (Lookup and Get read; Put is content-addressed and writes a key only if
absent), so a call that finds its pool service down (or draining) is tried on the next one, each
service at most once per call. A service that failed is skipped for `DOWN_S` unless every one is.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from supernode.runtime.config import Settings
from supernode.runtime.errors import UnavailableError
from supernode.runtime.grpc_peers import GrpcPoolClient
from supernode.runtime.peers import PoolBlock, PoolRead

log = logging.getLogger(__name__)
T = TypeVar("T")
DOWN_S = 2.0  # wall seconds a pool service that failed is passed over


class PoolClients:
    """A `PoolClient` over every address in `kvpool.addresses` (or the one `kvpool.address`)."""

    def __init__(self, settings: Settings, clients: Sequence[GrpcPoolClient] | None = None) -> None:
        addresses = settings.kvpool.addresses or [settings.kvpool.address]
        if clients is None:
            clients = [GrpcPoolClient(_for_address(settings, a)) for a in addresses]
        self.addresses = list(addresses)
        self.clients = list(clients)
        self._down_until = [0.0] * len(self.clients)
        self._next = itertools.count()
        self.num_failovers = 0

    async def lookup(self, keys: Sequence[str]) -> int:
        return await self._call(lambda c: c.lookup(keys))

    async def put(self, blocks: Sequence[PoolBlock]) -> int:
        return await self._call(lambda c: c.put(blocks))

    async def get(self, keys: Sequence[str]) -> PoolRead:
        return await self._call(lambda c: c.get(keys))

    async def lookup_many(self, prefixes: Sequence[Sequence[str]]) -> list[int]:
        return await self._call(lambda c: c.lookup_many(prefixes))

    async def put_each(self, blocks: Sequence[PoolBlock]) -> list[bool]:
        return await self._call(lambda c: c.put_each(blocks))

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    def _order(self) -> list[int]:
        """Every client once, starting at the next in turn; those marked down go last."""
        n = len(self.clients)
        start = next(self._next) % n
        ring = [(start + k) % n for k in range(n)]
        now = time.monotonic()
        return sorted(ring, key=lambda i: self._down_until[i] > now)

    async def _call(self, call: Callable[[GrpcPoolClient], Awaitable[T]]) -> T:
        last: UnavailableError | None = None
        for attempt, i in enumerate(self._order()):
            try:
                result = await call(self.clients[i])
            except UnavailableError as err:
                self._down_until[i] = time.monotonic() + DOWN_S
                last = err
                if len(self.clients) > 1:
                    log.warning("kv pool %s unavailable (%s); trying another", self.addresses[i], err.message)
                continue
            self._down_until[i] = 0.0
            self.num_failovers += attempt
            return result
        assert last is not None
        raise last


def _for_address(settings: Settings, address: str) -> Settings:
    return settings.model_copy(update={"kvpool": settings.kvpool.model_copy(update={"address": address})})
