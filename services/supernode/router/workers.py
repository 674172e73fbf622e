"""The router's view of its workers: a peer each, in-flight counts, polled load reports, health and
whether a fabric fault sits on their links.

Health: a worker is marked unhealthy when a call to it fails in the transport (refused, reset, or
timed out) or is given up for silence or its bound (`on_error`), or its load probe fails (times out
twice in a row, or is refused once); every `poll_s` the probe runs again and a worker that answers
is healthy again. Each fall
bumps `down_epoch`, which the router's watched calls compare to give up on calls to a fallen worker.
Faults: every `fault_poll_s` the fabric's active faults and die leases name the workers behind a
downed link (core.policy.instances_behind_faults); selection skips them while the fault lasts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from supernode.core.policy import WorkerSnapshot
from supernode.router import fault_metrics
from supernode.runtime.clock import Clock
from supernode.runtime.errors import DeadlineExceededError, SupernodeError, UnavailableError
from supernode.runtime.peers import DecodePeer, FaultSource, LoadSnapshot, PrefillPeer

log = logging.getLogger(__name__)
P = TypeVar("P", PrefillPeer, DecodePeer)
PROBE_TIMEOUTS_DOWN = 2  # load probes in a row that time out before a worker is marked unhealthy


def _no_load(role: str) -> LoadSnapshot:
    return LoadSnapshot("", role, 0, 0, 0, 0, 0)


@dataclass(slots=True, eq=False)
class Worker(Generic[P]):
    peer: P
    role: str  # "prefill" or "decode"
    num_inflight: int = 0  # requests this router has there now
    is_healthy: bool = True  # optimistic until a probe says otherwise
    load: LoadSnapshot = field(default_factory=lambda: _no_load(""))  # its last load report
    down_epoch: int = 0  # times it was marked unhealthy (watched calls compare it)
    num_probe_timeouts: int = 0  # load probes in a row that timed out
    is_behind_fault: bool = False  # a fabric fault holds one of its dies' links down
    # KV tokens this router reserved there since its last load report: requests sent together would
    # otherwise all pick the instance the (stale) report shows with the most free KV.
    kv_pending: int = 0

    @property
    def address(self) -> str:
        return self.peer.address

    def snapshot(self) -> WorkerSnapshot:
        load = self.load
        return WorkerSnapshot(  # by position (keywords cost a third more, twice per request and worker)
            self.peer.address,  # address
            self.is_healthy,  # is_healthy
            load.draining,  # is_draining
            self.num_inflight,  # num_inflight
            load.num_waiting,  # num_waiting
            load.kv_tokens_used + self.kv_pending,  # kv_tokens_used
            load.kv_tokens_capacity if self.role == "decode" else 0,  # kv_tokens_capacity
            load.worker_id,  # worker_id
            self.is_behind_fault,  # is_behind_fault
        )

    def on_error(self, err: SupernodeError) -> None:
        """A worker that could not be reached, did not answer in time or went silent mid-stream is
        marked down until a load probe answers (an error the worker itself answered, e.g. a fabric
        fault on its path, says nothing about the worker). Callers leave out calls that ended
        because the request's own deadline passed."""
        reason = getattr(err, "reason", "")  # router.watch.Abandoned: why the router gave up
        if reason == "worker_down":
            return
        if reason or (isinstance(err, (UnavailableError, DeadlineExceededError)) and not err.from_service):
            self.mark_down(f"{reason or err.code}: {err.message}")

    def mark_down(self, detail: str) -> None:
        if self.is_healthy:
            self.is_healthy = False
            self.down_epoch += 1
            fault_metrics.on_health(self.role, self.address, False, detail)

    def mark_up(self) -> None:
        self.num_probe_timeouts = 0
        if not self.is_healthy:
            self.is_healthy = True
            fault_metrics.on_health(self.role, self.address, True, "")


class WorkerSet:
    def __init__(
        self, prefills: Sequence[PrefillPeer], decodes: Sequence[DecodePeer], clock: Clock, poll_s: float,
        faults: FaultSource | None = None, fault_poll_s: float = 0.0, probe_in_turn: bool = False,
    ) -> None:  # fmt: skip
        """`poll_s`, `fault_poll_s`: emulated seconds between load probes, and between asks of
        `faults` (None or 0: never). `probe_in_turn`: the peers answer without waiting (in-process
        engines), so each poll probes them one after another in its own task, where probing them
        concurrently cost a task per probe (most of an idle simulation's work)."""
        self.prefill: list[Worker[PrefillPeer]] = [Worker(p, "prefill") for p in prefills]
        self.decode: list[Worker[DecodePeer]] = [Worker(d, "decode") for d in decodes]
        self.clock = clock
        self.poll_s = poll_s
        self.faults = faults
        self.fault_poll_s = fault_poll_s
        self.probe_in_turn = probe_in_turn
        self.behind_faults: frozenset[str] = frozenset()  # worker ids the last ask named
        self._task: asyncio.Task[None] | None = None
        self._fault_task: asyncio.Task[None] | None = None
        for worker in self.all:
            fault_metrics.INSTANCE_HEALTHY.labels(worker.role, worker.address).set(1)

    @property
    def all(self) -> list[Worker[PrefillPeer] | Worker[DecodePeer]]:
        return [*self.prefill, *self.decode]

    def start(self) -> None:
        if self._task is None:  # idempotent: the codec and an in-process cluster may both start it
            self._task = asyncio.create_task(self._poll_loop(), name="router-load-poll")
        if self._fault_task is None and self.faults is not None and self.fault_poll_s > 0:
            self._fault_task = asyncio.create_task(self._fault_loop(), name="router-fault-poll")

    async def close(self) -> None:
        for task in (self._task, self._fault_task):
            if task:
                task.cancel()
        self._task = self._fault_task = None
        for worker in self.all:
            await worker.peer.close()
        if self.faults is not None:
            await self.faults.close()

    async def poll_once(self) -> None:
        if self.probe_in_turn:
            for worker in self.all:
                await self._probe(worker)
        else:
            await asyncio.gather(*(self._probe(w) for w in self.all))

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_once()
            await self.clock.sleep(self.poll_s)

    async def _probe(self, worker: Worker[PrefillPeer] | Worker[DecodePeer]) -> None:
        try:
            worker.load = await worker.peer.load()
            worker.kv_pending = 0  # the report counts this router's reservations now
        except DeadlineExceededError as err:  # one slow answer on a busy host is not a failure yet
            worker.num_probe_timeouts += 1
            if worker.num_probe_timeouts >= PROBE_TIMEOUTS_DOWN:
                worker.mark_down(
                    f"{worker.num_probe_timeouts} load probes in a row timed out ({err.message})"
                )
        except SupernodeError as err:
            worker.mark_down(f"load probe failed: {err.code}: {err.message}")
        else:
            worker.mark_up()

    async def poll_faults(self) -> None:
        """Asks the fabric which workers sit behind a downed link and flags them (kept as they were
        when the fabric does not answer)."""
        assert self.faults is not None
        try:
            behind = await self.faults.workers_behind_faults()
        except SupernodeError as err:
            log.debug("fabric fault poll failed: %s", err.message)
            return
        self.behind_faults = behind
        for worker in self.all:
            is_behind = bool(worker.load.worker_id) and worker.load.worker_id in behind
            if is_behind != worker.is_behind_fault:
                worker.is_behind_fault = is_behind
                fault_metrics.on_fault(worker.role, worker.address, is_behind)

    async def _fault_loop(self) -> None:
        while True:
            await self.poll_faults()
            await self.clock.sleep(self.fault_poll_s)
