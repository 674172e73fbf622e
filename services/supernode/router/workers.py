"""The router's view of its workers: a peer each, in-flight counts, and polled load reports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from supernode.core.policy import WorkerSnapshot
from supernode.runtime.clock import Clock
from supernode.runtime.errors import SupernodeError, UnavailableError
from supernode.runtime.peers import DecodePeer, LoadSnapshot, PrefillPeer

log = logging.getLogger(__name__)
P = TypeVar("P", PrefillPeer, DecodePeer)


def _no_load(role: str) -> LoadSnapshot:
    return LoadSnapshot("", role, 0, 0, 0, 0, 0)


@dataclass(slots=True, eq=False)
class Worker(Generic[P]):
    peer: P
    role: str  # "prefill" or "decode"
    num_inflight: int = 0  # requests this router has there now
    is_healthy: bool = True  # optimistic until a probe says otherwise
    load: LoadSnapshot = field(default_factory=lambda: _no_load(""))  # its last load report

    @property
    def address(self) -> str:
        return self.peer.address

    def snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            address=self.address,
            is_healthy=self.is_healthy,
            is_draining=self.load.draining,
            num_inflight=self.num_inflight,
            num_waiting=self.load.num_waiting,
            kv_tokens_used=self.load.kv_tokens_used,
            kv_tokens_capacity=self.load.kv_tokens_capacity if self.role == "decode" else 0,
        )

    def on_error(self, err: SupernodeError) -> None:
        """A worker that could not be reached is marked down until the next load probe (an UNAVAILABLE
        the worker itself answered, e.g. a fabric fault on its path, says nothing about the worker)."""
        if isinstance(err, UnavailableError) and not err.from_service:
            self.is_healthy = False


class WorkerSet:
    def __init__(
        self, prefills: Sequence[PrefillPeer], decodes: Sequence[DecodePeer], clock: Clock, poll_s: float
    ) -> None:
        """`poll_s`: emulated seconds between load probes."""
        self.prefill: list[Worker[PrefillPeer]] = [Worker(p, "prefill") for p in prefills]
        self.decode: list[Worker[DecodePeer]] = [Worker(d, "decode") for d in decodes]
        self.clock = clock
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    @property
    def all(self) -> list[Worker[PrefillPeer] | Worker[DecodePeer]]:
        return [*self.prefill, *self.decode]

    def start(self) -> None:
        if self._task is None:  # idempotent: the codec and an in-process cluster may both start it
            self._task = asyncio.create_task(self._poll_loop(), name="router-load-poll")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            self._task = None
        for worker in self.all:
            await worker.peer.close()

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._probe(w) for w in self.all))

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_once()
            await self.clock.sleep(self.poll_s)

    async def _probe(self, worker: Worker[PrefillPeer] | Worker[DecodePeer]) -> None:
        try:
            worker.load = await worker.peer.load()
            worker.is_healthy = True
        except SupernodeError as err:
            if worker.is_healthy:
                log.warning("%s %s unreachable: %s", worker.role, worker.address, err.code)
            worker.is_healthy = False
