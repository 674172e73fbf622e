"""Link sharing: concurrent transfers are flows whose rates are max-min fair over their links' capacities.

Model. A flow moves `num_bytes` over a route (a tuple of link ids, each with a capacity in bytes/s) at a
rate (bytes/s) that is the max-min fair allocation (progressive filling) under the links' capacities and
the flow's own `rate_cap`. Rates are recomputed whenever a flow starts, ends or is removed and whenever a
link's capacity changes, so each flow's end time reflects the others on its links. A flow's last byte
leaves when its remaining bytes reach zero; its links are free from then on, and it *finishes* (is
delivered) `latency_s` later: total time = latency + bytes / rate when the rate does not change.

Time. The caller owns the clock and passes emulated seconds to every mutating call; time never goes
backwards. Each call first processes every event up to its `now_s`; flows that finished on the way are
kept and handed out, oldest first, by the next `advance()`. `next_event_s()` tells when to call next.

Recompute is incremental. A max-min allocation is the one where every flow is at its cap or has a
*bottleneck*: a saturated link on which no flow is faster (Bertsekas & Gallager, Data Networks, 6.5.2).
After a change, only a set C of flows is re-solved (progressive filling on the capacity the others leave),
starting from the flows the change touches. Then every link of C is checked: a flow recorded as
bottlenecked there must see it saturated and be the fastest on it. Each link that fails brings all its
flows into C, and C is solved again. When no link fails every flow has a bottleneck, so the whole
allocation is max-min fair, though most changes only ever touch a handful of flows.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

LinkId = str
FlowId = Hashable

_EPS = 1e-9  # relative tolerance on capacities and rates
_SAME_TIME_S = 1e-12  # flows ending within a picosecond of each other end together
_MAX_VALID_ROUTES = 1 << 14  # routes whose links were checked once (the links never change)


class LinkDownError(Exception):
    """The route crosses a link that is down: the transfer is refused (a service answers UNAVAILABLE)."""

    def __init__(self, link_ids: Sequence[LinkId]) -> None:
        self.link_ids = tuple(link_ids)
        super().__init__(f"link down: {', '.join(self.link_ids)}")


@dataclass(frozen=True, slots=True)
class FlowDone:
    flow_id: FlowId  # as given to add()
    start_s: float  # emulated time the flow was added (s)
    finish_s: float  # emulated time its last byte arrived: end of data + latency (s)
    num_bytes: float  # bytes moved


@dataclass(frozen=True, slots=True)
class LinkStats:
    capacity_bytes_per_s: float  # current capacity (bytes/s), kept while the link is down
    load_bytes_per_s: float  # sum of the rates of the flows on the link (bytes/s)
    utilisation: float  # load / capacity, 0..1
    bytes_total: float  # bytes carried since the network was created
    num_flows: int  # flows on the link now
    is_down: bool  # True while the link is down


@dataclass(slots=True, eq=False)
class _Flow:
    """A flow in flight (mutable, internal); hashed by identity."""

    fid: FlowId
    links: tuple[LinkId, ...]
    num_bytes: float
    start_s: float  # when it was added (s)
    cap: float = math.inf  # its own rate cap (bytes/s)
    latency_s: float = 0.0  # added to its end of data (s)
    remaining: float = 0.0  # bytes left at last_s
    last_s: float = 0.0  # when remaining was last settled (s)
    rate: float = 0.0  # current rate (bytes/s)
    bottleneck: LinkId | None = None  # the saturated link that limits it; None: at its cap
    seq: int = -1  # matches its live entry in the end-of-data heap; -1 until scheduled


class FlowNetwork:
    """Flows over links with max-min fair rates, driven by explicit emulated time (see the module doc)."""

    def __init__(self, capacities: Mapping[LinkId, float], now_s: float = 0.0) -> None:
        for link, capacity in capacities.items():
            _check_capacity(link, capacity)
        self._cap = dict(capacities)
        self._down: set[LinkId] = set()
        self._on: dict[LinkId, dict[_Flow, None]] = {link: {} for link in self._cap}
        self._load = dict.fromkeys(self._cap, 0.0)
        self._bytes = dict.fromkeys(self._cap, 0.0)  # bytes of flows settled so far
        self._flows: dict[FlowId, _Flow] = {}
        self._ends: list[tuple[float, int, _Flow]] = []  # (end of data s, seq, flow), stale entries skipped
        self._delivering: dict[FlowId, FlowDone] = {}
        self._deliveries: list[tuple[float, int, FlowDone]] = []
        self._done: list[FlowDone] = []
        self._seq = itertools.count()
        self._valid_routes: set[tuple[LinkId, ...]] = set()  # routes of known links, each crossed once
        self._latencies: dict[float, int] = {}  # latency (s) -> flows with it whose data is moving
        self.now_s = now_s  # emulated time up to which every event has been processed (s)

    # --- mutations ---

    def add(
        self,
        flow_id: FlowId,
        links: Sequence[LinkId],
        num_bytes: float,
        now_s: float,
        *,
        rate_cap: float | None = None,
        latency_s: float = 0.0,
    ) -> None:
        """Starts a flow of `num_bytes` over `links` at `now_s`, capped at `rate_cap` bytes/s if given.

        Raises LinkDownError if a link is down, ValueError for an id in use, an unknown or repeated link,
        negative bytes or latency, or a flow that nothing would limit (no links and no cap).
        """
        route = self._check_new(flow_id, links, num_bytes, rate_cap, latency_s)
        self._advance_to(now_s)
        cap = math.inf if rate_cap is None else rate_cap
        flow = _Flow(flow_id, route, num_bytes, self.now_s, cap, latency_s, num_bytes, self.now_s)
        if num_bytes == 0:
            self._deliver(flow, self.now_s + latency_s)
            return
        self._flows[flow_id] = flow
        self._latencies[latency_s] = self._latencies.get(latency_s, 0) + 1
        for link in route:
            self._on[link][flow] = None
        self._resolve([flow], route)

    def remove(self, flow_id: FlowId, now_s: float) -> bool:
        """Cancels a flow (failed or abandoned transfer); False if it is not in flight or in delivery."""
        self._advance_to(now_s)
        if self._delivering.pop(flow_id, None) is not None:
            return True
        flow = self._flows.get(flow_id)
        if flow is None:
            return False
        self._settle(flow)
        self._detach([flow])
        return True

    def set_capacity(self, link: LinkId, bytes_per_s: float, now_s: float) -> None:
        """Changes a link's capacity (degradation or repair), rescheduling the flows on it."""
        self._known(link)
        _check_capacity(link, bytes_per_s)
        self._advance_to(now_s)
        self._cap[link] = bytes_per_s
        self._resolve(list(self._on[link]), (link,))

    def set_link_down(self, link: LinkId, now_s: float) -> list[FlowId]:
        """Takes a link down: its flows in flight fail (returned, removed) and new ones are refused."""
        self._known(link)
        self._advance_to(now_s)
        self._down.add(link)
        failed = list(self._on[link])
        for flow in failed:
            self._settle(flow)
        self._detach(failed)
        return [flow.fid for flow in failed]

    def set_link_up(self, link: LinkId, now_s: float) -> None:
        """Brings a link back up at its current capacity."""
        self._known(link)
        self._advance_to(now_s)
        self._down.discard(link)

    def advance(self, now_s: float) -> list[FlowDone]:
        """Processes events up to `now_s`; returns the flows finished since the last call, by finish time."""
        self._advance_to(now_s)
        done, self._done = self._done, []
        return done

    # --- queries ---

    def next_event_s(self) -> float | None:
        """Emulated time of the next end of data or delivery (s), None when nothing is in flight."""
        end = self._peek_end()
        delivery = self._deliveries[0][0] if self._deliveries else None
        if end is None or delivery is None:
            return end if delivery is None else delivery
        return min(end, delivery)

    def next_delivery_s(self) -> float | None:
        """Emulated time before which no flow finishes (s), None when nothing is in flight: the next
        pending delivery, or the next end of data plus the smallest latency of the flows moving (every
        other end of data comes later). A caller that acts only on finished flows can wait until then;
        the ends of data before it are processed, in time order, by the next call."""
        end = self._peek_end()
        delivery = self._deliveries[0][0] if self._deliveries else None
        if end is None:
            return delivery
        end += min(self._latencies)
        return end if delivery is None else min(end, delivery)

    def finish_time_estimate(self, flow_id: FlowId) -> float:
        """When the flow will finish if nothing changes (s; inf while starved); KeyError if unknown."""
        if flow_id in self._delivering:
            return self._delivering[flow_id].finish_s
        flow = self._flows[flow_id]
        if flow.rate <= 0:
            return math.inf
        return flow.last_s + flow.remaining / flow.rate + flow.latency_s

    def rate(self, flow_id: FlowId) -> float:
        """The flow's current rate (bytes/s; 0 once its data has left); KeyError if unknown."""
        if flow_id in self._delivering:
            return 0.0
        return self._flows[flow_id].rate

    def link_stats(self, link: LinkId) -> LinkStats:
        """A link's capacity, load, utilisation and bytes carried, as of `now_s`."""
        self._known(link)
        capacity, load = self._cap[link], self._load[link]
        moving = sum(min(g.remaining, g.rate * (self.now_s - g.last_s)) for g in self._on[link])
        carried = self._bytes[link] + moving
        return LinkStats(
            capacity, load, min(1.0, load / capacity), carried, len(self._on[link]), link in self._down
        )

    def is_moving(self, flow_id: FlowId) -> bool:
        """True while the flow's data is still on its links (not finished, delivering, failed or removed)."""
        return flow_id in self._flows

    def is_down(self, link: LinkId) -> bool:
        return link in self._down

    @property
    def num_flows(self) -> int:
        """Flows whose data is still moving."""
        return len(self._flows)

    def busy_links(self) -> set[LinkId]:
        """Links carrying at least one flow now (every other link has zero load)."""
        return {link for flow in self._flows.values() for link in flow.links}

    # --- events ---

    def _advance_to(self, now_s: float) -> None:
        if now_s < self.now_s - _SAME_TIME_S:
            raise ValueError(f"now_s: time went backwards ({now_s} < {self.now_s})")
        while (end_s := self._peek_end()) is not None and end_s <= now_s:
            ending = []
            while self._ends and self._ends[0][0] <= end_s + _SAME_TIME_S:
                _, seq, flow = heapq.heappop(self._ends)
                if flow.seq == seq and flow.fid in self._flows:
                    ending.append(flow)
            self.now_s = max(self.now_s, end_s)
            for flow in ending:
                self._settle(flow, is_finished=True)
            self._detach(ending)
            for flow in ending:
                self._deliver(flow, self.now_s + flow.latency_s)
        self.now_s = max(self.now_s, now_s)
        while self._deliveries and self._deliveries[0][0] <= self.now_s:
            _, _, done = heapq.heappop(self._deliveries)
            if self._delivering.get(done.flow_id) is done:
                del self._delivering[done.flow_id]
                self._done.append(done)

    def _peek_end(self) -> float | None:
        ends = self._ends
        while ends and (ends[0][2].seq != ends[0][1] or ends[0][2].fid not in self._flows):
            heapq.heappop(ends)
        return ends[0][0] if ends else None

    def _deliver(self, flow: _Flow, finish_s: float) -> None:
        done = FlowDone(flow.fid, flow.start_s, finish_s, flow.num_bytes)
        self._delivering[flow.fid] = done
        heapq.heappush(self._deliveries, (finish_s, next(self._seq), done))

    def _detach(self, flows: Sequence[_Flow]) -> None:
        """Takes flows off their links at now_s and re-solves the flows their departure may speed up."""
        freed: dict[LinkId, None] = {}
        for flow in flows:
            del self._flows[flow.fid]
            left = self._latencies[flow.latency_s] - 1
            if left:
                self._latencies[flow.latency_s] = left
            else:
                del self._latencies[flow.latency_s]
            for link in flow.links:
                del self._on[link][flow]
                self._load[link] = self._load[link] - flow.rate if self._on[link] else 0.0
                freed[link] = None
        seeds = {g: None for link in freed for g in self._on[link] if g.bottleneck in freed}
        self._resolve(list(seeds), freed)

    # --- max-min fair recompute ---

    def _resolve(self, seeds: Iterable[_Flow], dirty: Iterable[LinkId]) -> None:
        members: dict[_Flow, float] = {}  # flow -> its rate before this change
        self._join(members, seeds)
        check = dict.fromkeys(dirty)
        while members:
            check.update(self._apply(_fill(members, self._cap, self._load)))
            bad = self._violated(check)
            newcomers = [g for link in bad for g in self._on[link] if g not in members]
            if not newcomers:
                break
            self._join(members, newcomers)
            check = dict.fromkeys(bad)
        for flow, old_rate in members.items():
            if flow.rate != old_rate or flow.seq < 0:
                self._schedule(flow)

    def _join(self, members: dict[_Flow, float], flows: Iterable[_Flow]) -> None:
        for flow in flows:
            if flow not in members:
                self._settle(flow)
                members[flow] = flow.rate

    def _settle(self, flow: _Flow, is_finished: bool = False) -> None:
        """Counts the bytes the flow moved since last_s (all it had left when finished) up to now_s."""
        elapsed = self.now_s - flow.last_s
        if elapsed <= 0 and not is_finished:
            return
        moved = flow.remaining if is_finished else min(flow.remaining, flow.rate * elapsed)
        flow.remaining -= moved
        flow.last_s = self.now_s
        for link in flow.links:
            self._bytes[link] += moved

    def _apply(self, solution: dict[_Flow, tuple[float, LinkId | None]]) -> dict[LinkId, None]:
        """Sets the solved rates; returns the links whose bottleneck conditions may have changed."""
        deltas: dict[LinkId, float] = {}
        claimed: dict[LinkId, None] = {}
        for flow, (rate, bottleneck) in solution.items():
            if bottleneck is not None and bottleneck != flow.bottleneck:
                claimed[bottleneck] = None
            flow.bottleneck = bottleneck
            if rate != flow.rate:
                for link in flow.links:
                    deltas[link] = deltas.get(link, 0.0) + rate - flow.rate
                flow.rate = rate
        for link, delta in deltas.items():
            self._load[link] += delta
        claimed.update(dict.fromkeys(deltas))
        return claimed

    def _violated(self, links: Iterable[LinkId]) -> list[LinkId]:
        """Links where a flow recorded as bottlenecked there is not: unsaturated, or someone is faster."""
        bad = []
        for link in links:
            flows = self._on[link]
            total = top = 0.0
            for g in flows:
                rate = g.rate
                total += rate
                if rate > top:
                    top = rate
            self._load[link] = total  # resynchronise the running sum
            tol = _EPS * self._cap[link]
            is_saturated = total >= self._cap[link] - tol
            for g in flows:
                if g.bottleneck == link and (not is_saturated or g.rate < top - tol):
                    bad.append(link)
                    break
        return bad

    def _schedule(self, flow: _Flow) -> None:
        flow.seq = next(self._seq)
        if flow.rate > 0:
            heapq.heappush(self._ends, (flow.last_s + flow.remaining / flow.rate, flow.seq, flow))
        if len(self._ends) > 4 * len(self._flows) + 1024:
            self._ends = [
                entry for entry in self._ends if entry[2].seq == entry[1] and entry[2].fid in self._flows
            ]
            heapq.heapify(self._ends)

    # --- bookkeeping ---

    def _known(self, link: LinkId) -> None:
        if link not in self._cap:
            raise ValueError(f"link: unknown link {link!r}")

    def _check_new(
        self,
        flow_id: FlowId,
        links: Sequence[LinkId],
        num_bytes: float,
        rate_cap: float | None,
        latency_s: float,
    ) -> tuple[LinkId, ...]:
        if flow_id in self._flows or flow_id in self._delivering:
            raise ValueError(f"flow_id: {flow_id!r} is already in flight")
        route = links if isinstance(links, tuple) else tuple(links)
        if route not in self._valid_routes:
            for link in route:
                self._known(link)
            if len(set(route)) != len(route):
                raise ValueError(f"links: a route crosses each link once, got {route}")
            if len(self._valid_routes) >= _MAX_VALID_ROUTES:
                self._valid_routes.clear()
            self._valid_routes.add(route)
        if not (num_bytes >= 0 and math.isfinite(num_bytes)):
            raise ValueError(f"num_bytes: must be finite and >= 0, got {num_bytes}")
        if rate_cap is not None and not (rate_cap > 0 and math.isfinite(rate_cap)):
            raise ValueError(f"rate_cap: must be finite and > 0 bytes/s, got {rate_cap}")
        if not route and rate_cap is None:
            raise ValueError("links: a flow with no links needs a rate_cap")
        if not (latency_s >= 0 and math.isfinite(latency_s)):
            raise ValueError(f"latency_s: must be finite and >= 0, got {latency_s}")
        down = [link for link in route if link in self._down]
        if down:
            raise LinkDownError(down)
        return route


def _check_capacity(link: LinkId, capacity: float) -> None:
    if not (capacity > 0 and math.isfinite(capacity)):
        raise ValueError(f"capacity of {link!r}: must be finite and > 0 bytes/s, got {capacity}")


def _fill(
    members: Mapping[_Flow, float], cap: Mapping[LinkId, float], load: Mapping[LinkId, float]
) -> dict[_Flow, tuple[float, LinkId | None]]:
    """Progressive filling of `members` on what the other flows leave: flow -> (rate, bottleneck or None)."""
    if len(members) == 1:
        (flow,) = members
        return {flow: _fill_one(flow, cap, load)}
    residual: dict[LinkId, float] = {}
    sharers: dict[LinkId, list[_Flow]] = {}
    for flow in members:
        for link in flow.links:
            if link in sharers:
                sharers[link].append(flow)
                residual[link] += flow.rate
            else:
                sharers[link] = [flow]
                residual[link] = cap[link] - load[link] + flow.rate
    residual = {link: max(0.0, left) for link, left in residual.items()}  # left by the other flows
    count = {link: len(flows) for link, flows in sharers.items()}
    active = dict.fromkeys(members)
    solution: dict[_Flow, tuple[float, LinkId | None]] = {}
    level = 0.0
    while active:
        link_step = min((residual[link] / n for link, n in count.items() if n), default=math.inf)
        step = max(0.0, min(link_step, min(f.cap for f in active) - level))
        level += step
        frozen: dict[_Flow, LinkId | None] = {f: None for f in active if level >= f.cap * (1 - _EPS)}
        for link, n in count.items():
            if n:
                residual[link] -= step * n
                if residual[link] <= _EPS * cap[link]:
                    frozen.update((f, link) for f in sharers[link] if f in active and f not in frozen)
        if not frozen:  # rounding left the tightest link a hair above zero: freeze on the tightest
            tightest = min(
                (link for link, n in count.items() if n), key=lambda link: residual[link] / count[link]
            )
            frozen = {f: tightest for f in sharers[tightest] if f in active}
        for flow, bottleneck in frozen.items():
            solution[flow] = (level, bottleneck)
            del active[flow]
            for link in flow.links:
                count[link] -= 1
    return solution


def _fill_one(
    flow: _Flow, cap: Mapping[LinkId, float], load: Mapping[LinkId, float]
) -> tuple[float, LinkId | None]:
    """`_fill` of a single flow (a new transfer is re-solved alone first): the same steps, in the same
    order, without the bookkeeping for flows that share links."""
    links = flow.links
    residual = [max(0.0, cap[link] - load[link] + flow.rate) for link in links]
    step = max(0.0, min(min(residual, default=math.inf), flow.cap))
    if step >= flow.cap * (1 - _EPS):  # at its own cap (the level after one step is the step)
        return step, None
    left = [r - step for r in residual]
    for link, r in zip(links, left, strict=True):
        if r <= _EPS * cap[link]:
            return step, link
    return step, links[min(range(len(links)), key=left.__getitem__)]  # rounding: the tightest link
