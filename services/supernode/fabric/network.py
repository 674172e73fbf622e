"""The fabric's transfer engine: the pure flow model (`core.flows`) on the supernode topology, on a clock.

A transfer's life:
1. admitted: its route's links become a flow at the current emulated instant (refused with UNAVAILABLE
   when a link on the path is down);
2. moving: its rate is shared max-min fairly with the other flows and recomputed whenever a flow
   starts, finishes or a fault changes a link, so its finish time moves with the traffic around it;
3. finished: one timer on the clock fires at the next finish (or fault end), settles the model and
   resolves the waiting callers; or failed: a link of its path went down (UNAVAILABLE);
   or cancelled: the caller went away and the flow is removed, speeding up the others.

Emulated time inside the model is counted from `origin` (the clock's reading when the engine was built)
to keep float resolution fine; answers are converted back to the clock's epoch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from supernode.core.flows import FlowDone, FlowNetwork, LinkDownError
from supernode.core.topology import Route, Topology, path_down_message
from supernode.fabric.faults import Fault, FaultTable
from supernode.runtime.clock import Clock, Timer, call_at
from supernode.runtime.errors import UnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    start_s: float  # emulated time the transfer started (s since the clock's epoch)
    finish_s: float  # emulated time its last byte arrived (s since the clock's epoch)
    num_bytes: int  # bytes moved
    latency_s: float  # fixed path latency included in finish_s (s)
    bandwidth_bytes_per_s: float  # average rate while its data moved (bytes/s; 0 for an empty transfer)


class FabricNetwork:
    """Schedules transfers as flows and wakes their callers at their finish times."""

    def __init__(self, topology: Topology, clock: Clock, time_scale: float = 1.0) -> None:
        self.topology = topology
        self.clock = clock
        self.time_scale = time_scale  # emulated s per wall s, to turn fault windows into retry hints
        self.flows = FlowNetwork(topology.capacities())
        self.faults = FaultTable()
        self.origin = clock.now()
        self._waiters: dict[Hashable, asyncio.Future[FlowDone]] = {}
        self._ids = itertools.count()
        self._target = math.inf  # model time the timer is set for (inf: none set)
        self._timer: Timer | None = None
        self._is_running = False

    def start(self) -> None:
        self._is_running = True
        self._rearm()

    async def stop(self) -> None:
        self._is_running = False
        self._disarm()
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(UnavailableError("fabric is stopping", retry_after_s=1.0))
        self._waiters.clear()

    @property
    def num_inflight(self) -> int:
        return len(self._waiters)

    def now_s(self) -> float:
        """Current model time (s since origin), never behind what the model has processed."""
        return max(self.clock.now() - self.origin, self.flows.now_s)

    def settle(self) -> None:
        """Brings the flow model up to now (the flows whose data has left are off their links), for a
        reader of its link statistics: the engine itself only wakes at deliveries."""
        self._settle(self.now_s())

    async def transfer_many(self, items: Sequence[tuple[Route, int]]) -> list[TransferOutcome]:
        """Starts every (route, num_bytes) now and waits until all have finished; UNAVAILABLE if one fails."""
        if len(items) == 1:  # the usual single transfer: without the lists and gather's wrapper
            route, num_bytes = items[0]
            return [await self.transfer(route, num_bytes)]
        now = self.now_s()
        self._settle(now)
        ids = [next(self._ids) for _ in items]
        try:
            for flow_id, (route, num_bytes) in zip(ids, items, strict=True):
                self._start(flow_id, route, num_bytes, now)
        except LinkDownError as err:
            self._abandon(ids)
            raise self._path_down(err) from None
        self._kick()
        try:
            done = await asyncio.gather(*(self._waiters[flow_id] for flow_id in ids))
        except BaseException:
            self._abandon(ids)
            raise
        return [self._outcome(d, route) for d, (route, _) in zip(done, items, strict=True)]

    async def transfer(self, route: Route, num_bytes: int) -> TransferOutcome:
        """One transfer started now, its outcome when it has finished; UNAVAILABLE if it fails."""
        flow_id = next(self._ids)
        future = self._begin(flow_id, route, num_bytes)
        try:
            done = await future
        except BaseException:
            self._abandon((flow_id,))
            raise
        return self._outcome(done, route)

    def start_transfer(self, route: Route, num_bytes: int) -> asyncio.Future[FlowDone]:
        """One transfer started now in the background: the future is done when it has finished (failed
        with UNAVAILABLE when its path is or goes down); the caller need not await it, and no task
        waits for it."""
        try:
            return self._begin(next(self._ids), route, num_bytes)
        except UnavailableError as err:
            future: asyncio.Future[FlowDone] = asyncio.get_running_loop().create_future()
            future.set_exception(err)
            return future

    def _begin(self, flow_id: int, route: Route, num_bytes: int) -> asyncio.Future[FlowDone]:
        """Starts the flow at the current instant; UNAVAILABLE when its path is down."""
        now = self.now_s()
        self._settle(now)
        try:
            future = self._start(flow_id, route, num_bytes, now)
        except LinkDownError as err:
            self._abandon((flow_id,))
            raise self._path_down(err) from None
        self._kick()
        return future

    def _start(self, flow_id: int, route: Route, num_bytes: int, now: float) -> asyncio.Future[FlowDone]:
        """Adds the flow to the model, its caller's future registered first (a flow may finish during
        the next add); LinkDownError when its route is down."""
        future: asyncio.Future[FlowDone] = asyncio.get_running_loop().create_future()
        self._waiters[flow_id] = future
        cap, latency = route.rate_cap_bytes_per_s, route.latency_s
        self.flows.add(flow_id, route.links, num_bytes, now, rate_cap=cap, latency_s=latency)
        return future

    def _path_down(self, err: LinkDownError) -> UnavailableError:
        retry_s = self._retry_after(err.link_ids)
        return UnavailableError(path_down_message(err.link_ids), retry_after_s=retry_s)

    def inject(
        self, link_ids: Sequence[str], bandwidth_factor: float, duration_s: float
    ) -> tuple[Fault, int]:
        """Applies a fault now for `duration_s` emulated seconds; returns it and the transfers it failed."""
        now = self.now_s()
        self._settle(now)
        fault = self.faults.add(link_ids, bandwidth_factor, now, now + duration_s)
        num_failed = self._reapply(fault.link_ids, now)
        log.warning("fault %d: %d links at %.0f%% capacity for %.3g s", fault.fault_id, len(link_ids),
                    100 * bandwidth_factor, duration_s)  # fmt: skip
        self._kick()
        return fault, num_failed

    def clear_faults(self) -> int:
        """Ends every active fault now; returns how many there were."""
        now = self.now_s()
        self._settle(now)
        faults = [self.faults.remove(fault_id) for fault_id in list(self.faults.active)]
        for fault in faults:
            self._reapply(fault.link_ids, now)
        self._kick()
        return len(faults)

    # --- the driver: one timer at the next event (a flow's finish or a fault's end), no task ---

    def _next_event_s(self) -> float:
        """The next instant the engine must act at: a flow's delivery or a fault's end. A flow's end of
        data needs no wake-up of its own (the model processes it, in time order, at the next call)."""
        flow_s = self.flows.next_delivery_s()
        fault_s = self.faults.next_end_s() if self.faults.active else None
        if fault_s is None:
            return math.inf if flow_s is None else flow_s
        return fault_s if flow_s is None else min(flow_s, fault_s)

    def _on_timer(self) -> None:
        target, self._target, self._timer = self._target, math.inf, None
        # Settle the event at `target` even when the clock's reading, less the origin, rounds to just
        # below it (a virtual clock stops exactly there; waiting again for that instant would not move).
        self._settle(max(self.now_s(), target))
        self._rearm()

    def _kick(self) -> None:
        """Moves the timer earlier when the next event now comes before the one it is set for."""
        if self._next_event_s() < self._target:
            self._rearm()

    def _rearm(self) -> None:
        """Sets the timer for the next event (none when nothing is in flight or the engine is stopped)."""
        self._disarm()
        target = self._next_event_s()
        if self._is_running and target < math.inf:
            self._target = target
            self._timer = call_at(self.clock, self.origin + target, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._target = None, math.inf

    def _settle(self, now: float) -> None:
        """Processes flow finishes and fault ends up to `now`, in time order, and wakes the callers."""
        if self.faults.active:
            for fault in self.faults.due(now):
                self._resolve(self.flows.advance(fault.end_s))
                self.faults.remove(fault.fault_id)
                self._reapply(fault.link_ids, fault.end_s)
                log.info("fault %d ended", fault.fault_id)
        finished = self.flows.advance(now)
        if finished:
            self._resolve(finished)

    def _resolve(self, finished: list[FlowDone]) -> None:
        for done in finished:
            future = self._waiters.pop(done.flow_id, None)
            if future is not None and not future.done():
                future.set_result(done)

    # --- faults and failures ---

    def _reapply(self, link_ids: Sequence[str], now: float) -> int:
        """Sets each link's capacity from the active faults; fails the flows on links that went down."""
        num_failed = 0
        for link in link_ids:
            factor = self.faults.factor(link)
            if factor == 0:
                if not self.flows.is_down(link):
                    num_failed += self._fail(self.flows.set_link_down(link, now), link)
                continue
            if self.flows.is_down(link):
                self.flows.set_link_up(link, now)
            self.flows.set_capacity(link, self.topology.links[link].capacity_bytes_per_s * factor, now)
        return num_failed

    def _fail(self, flow_ids: list[Hashable], link: str) -> int:
        retry_s = self._retry_after([link])
        for flow_id in flow_ids:
            future = self._waiters.pop(flow_id, None)
            if future is not None and not future.done():
                future.set_exception(
                    UnavailableError(f"link {link} went down mid-transfer", retry_after_s=retry_s)
                )
        return len(flow_ids)

    def _retry_after(self, link_ids: Sequence[str]) -> float:
        """Wall seconds until the faults downing these links end (a retry hint)."""
        now, wanted = self.now_s(), set(link_ids)
        ends = [
            f.end_s
            for f in self.faults.active.values()
            if f.bandwidth_factor == 0 and wanted & set(f.link_ids)
        ]
        return max(0.0, max(ends, default=now) - now) / self.time_scale

    def _abandon(self, flow_ids: Sequence[Hashable]) -> None:
        """Removes the flows of a failed or cancelled call; the others speed up."""
        now = self.now_s()
        for flow_id in flow_ids:
            self.flows.remove(flow_id, now)
            future = self._waiters.pop(flow_id, None)
            if future is None:
                continue
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "exception was never retrieved" warning
            else:
                future.cancel()
        self._settle(now)

    def _outcome(self, done: FlowDone, route: Route) -> TransferOutcome:
        # The bandwidth comes from model time, which keeps full resolution; epoch times at a large
        # time_scale are ~1e10 s and resolve only ~10 us.
        moving_s = done.finish_s - done.start_s - route.latency_s
        bandwidth = done.num_bytes / moving_s if done.num_bytes and moving_s > 0 else 0.0
        start, finish = self.origin + done.start_s, self.origin + done.finish_s
        return TransferOutcome(start, finish, int(done.num_bytes), route.latency_s, bandwidth)
