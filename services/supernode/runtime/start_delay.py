"""The router's first-token queueing bound: a request that would wait longer than
`router.max_queue_delay_s` behind the requests still waiting for their first token is refused at once
(RESOURCE_EXHAUSTED with a retry hint; HTTP 429 with Retry-After at the frontend), instead of being
admitted into a backlog its first token would sit behind.

A request is *starting* from the moment it is admitted until the router sends its first chunk (or it
ends first). Its queueing delay is estimated, when it arrives, as

    requests starting ahead of it x the recent wall interval between first tokens,

plus what it already waited in front of the router (a gateway's queue: the HTTP frontend sends the wall
seconds since it received the request as the `supernode-queued-s` metadata), plus how far this
process's event loop is behind (`loop_lag`, runtime/loop_lag.py: a loop that is behind starts the call
and writes its first token that much later). The HTTP frontend keeps a bound of its own, timed from a
request's arrival there to the router's first chunk (frontend/admission.py). The interval is measured
while others are still starting: the rate at which this router, its prefill instances and its host turn
a backlog into first tokens, whatever bounds it (batching in emulated time or the processes' CPU). A
first token that others are still waiting behind, or that waited behind others, counts a gap: from the
previous first token, or, for the first of a backlog, from its own arrival; the interval is the recent
gaps' total over their number, both forgotten with a time constant of `INTERVAL_MEMORY_S`. A prefill
batch's first tokens go out together (due at its end), so most gaps are nearly nothing and one is the
batch's length: the total over the number keeps that length in, where an average that weighted each gap
alike would let a run of zero gaps hide it. Before any such interval has been seen, the time one request
took alone (arrival to first token with nothing ahead) stands in for it: no overlap is assumed until
some has been observed, so a burst on a router that has served only one request at a time is admitted as
far as serial service keeps within the bound, and the rest refused while the backlog shows how fast it
drains. Before any first token at all, nothing is known and everything is admitted.

The count ahead misses a host slowed by what is already running (the admitted requests' token
streams share the CPU with the next requests' first tokens), so the estimate is at least the
*congestion*: the smallest delay beyond the alone time among the first tokens of the last
`CONGESTION_WINDOW_S` (CoDel's reading of a standing queue: when even the least-delayed recent request
waited past the bound, the next one will too). First tokens older than the window are forgotten, so
once the refusals have let the backlog drain, admission resumes by itself.

Lifecycle of one request here: `admit` (refused, or a ticket) -> `on_first_token` -> `on_end`
(a no-op after the first token).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from supernode.runtime.admission import ShedError

QUEUED_KEY = "supernode-queued-s"  # call metadata: wall seconds the request waited before this call
_MAX_QUEUED_S = 3600.0
_EWMA_WEIGHT = 0.2  # weight of the newest sample in the alone estimate
INTERVAL_MEMORY_S = 0.25  # wall seconds over which the interval between first tokens forgets its past
_MIN_RETRY_AFTER_S = 0.5
CONGESTION_WINDOW_S = 1.0  # wall seconds of first tokens the congestion reading looks back on


@dataclass(slots=True)
class Ticket:
    arrived_at: float  # monotonic wall seconds
    is_alone: bool  # nothing else was starting when it arrived
    is_open: bool = True  # still waiting for its first token


class StartDelayBound:
    def __init__(
        self, max_delay_s: float, clock: Callable[[], float] = time.monotonic,
        loop_lag: Callable[[], float] | None = None,
    ) -> None:  # fmt: skip
        """`max_delay_s`: wall seconds a request may be expected to wait (0 = no bound, only counted);
        `loop_lag`: wall seconds this process's event loop is behind now (runtime/loop_lag.py)."""
        if max_delay_s < 0:
            raise ValueError("max_delay_s: must be >= 0")
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.loop_lag = loop_lag
        self.num_starting = 0
        self.alone_s: float | None = None  # EWMA of arrival -> first token with nothing ahead
        self._gaps_s = 0.0  # wall time between first tokens under a backlog, decayed (see module doc)
        self._num_gaps = 0.0  # the number of those gaps, decayed alike
        self._last_first_at: float | None = None
        self._is_backlogged = False  # someone has been starting without a break since the last first token
        self._recent: deque[tuple[float, float]] = deque()  # (when, delay beyond alone_s) per first token

    @property
    def interval_s(self) -> float | None:
        """Wall seconds per first token under a backlog, recently (None: none measured yet)."""
        return self._gaps_s / self._num_gaps if self._num_gaps > 0 else None

    def estimate_s(self, num_ahead: int | None = None) -> float | None:
        """Wall seconds a request arriving now would wait behind `num_ahead` starting requests
        (default: those starting now); None while nothing has been measured."""
        ahead = self.num_starting if num_ahead is None else num_ahead
        per = self.interval_s if self.interval_s is not None else self.alone_s
        behind = 0.0 if ahead == 0 else (None if per is None else ahead * per)
        congestion = self.congestion_s()
        if behind is None or congestion is None:
            return behind if congestion is None else congestion
        return max(behind, congestion)

    def congestion_s(self) -> float | None:
        """The smallest delay beyond the alone time among the last window's first tokens (None: none)."""
        horizon = self.clock() - CONGESTION_WINDOW_S
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        return min(delay for _, delay in self._recent) if self._recent else None

    def admit(self, queued_s: float = 0.0) -> Ticket:
        """Admits a request arriving now that already waited `queued_s` wall seconds upstream, or
        raises ShedError (reason `queue_delay`)."""
        ahead_s = self.estimate_s()
        lag_s = self.loop_lag() if self.loop_lag is not None else 0.0
        wait_s = queued_s + lag_s + (ahead_s or 0.0)
        known = ahead_s is not None or queued_s > 0 or lag_s > 0
        if self.max_delay_s > 0 and known and wait_s > self.max_delay_s:
            retry_after_s = max(_MIN_RETRY_AFTER_S, math.ceil((wait_s - self.max_delay_s) * 10) / 10)
            raise ShedError(
                f"overloaded: estimated wait for a first token {wait_s:.2f}s exceeds the "
                f"{self.max_delay_s:g}s queueing bound; retry after {retry_after_s:g}s",
                "queue_delay",
                retry_after_s,
            )
        ticket = Ticket(self.clock(), is_alone=self.num_starting == 0)
        self.num_starting += 1
        return ticket

    def on_first_token(self, ticket: Ticket) -> None:
        """The request's first chunk went out: it no longer holds up those behind it."""
        if not ticket.is_open:
            return
        now = self.clock()
        latency_s = now - ticket.arrived_at
        if self.alone_s is not None:
            self._recent.append((now, max(0.0, latency_s - self.alone_s)))
        if ticket.is_alone:
            self.alone_s = _ewma(self.alone_s, latency_s)
        if self._is_backlogged or self.num_starting > 1:  # a backlog's first token: a gap
            last = self._last_first_at
            if self._is_backlogged and last is not None:
                since = last
            else:  # the first of a backlog: from its arrival (or the previous first token, if later)
                since = ticket.arrived_at if last is None else max(last, ticket.arrived_at)
            gap = now - since
            keep = math.exp(-gap / INTERVAL_MEMORY_S)
            self._gaps_s = self._gaps_s * keep + gap
            self._num_gaps = self._num_gaps * keep + 1.0
        self._last_first_at = now
        self._leave(ticket)
        self._is_backlogged = self.num_starting > 0

    def on_end(self, ticket: Ticket) -> None:
        """The request ended (refused downstream, failed, cancelled or finished); a no-op once it
        had its first token."""
        if ticket.is_open:
            self._leave(ticket)

    def _leave(self, ticket: Ticket) -> None:
        ticket.is_open = False
        self.num_starting -= 1
        if self.num_starting == 0:
            self._is_backlogged = False


def queued_s(metadata: object) -> float:
    """The `supernode-queued-s` value of call metadata (pairs of key, value); 0 when absent or not a
    number in [0, 3600]."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == QUEUED_KEY:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return 0.0
            return seconds if 0.0 <= seconds <= _MAX_QUEUED_S else 0.0
    return 0.0


def _ewma(prior: float | None, sample: float) -> float:
    return sample if prior is None else prior + _EWMA_WEIGHT * (sample - prior)
