"""Admission control: a bounded number of requests in flight, a bounded wait for a slot, a bounded
number per connection; everything beyond is refused at once with a retry hint (never queued without
bound, never dropped silently).

`Gate` is shared by the HTTP frontend (`frontend/admission.py`) and the gRPC servers
(`runtime/server.py`). A refusal is a `ResourceExhaustedError` (gRPC RESOURCE_EXHAUSTED with the
`retry-after-s` trailer, HTTP 429 with `Retry-After`); `ShedLog` counts it and writes a log line.

Lifecycle of one request at a gate:
1. a slot is free: admitted;
2. every slot is taken: it waits in FIFO order only if at most `max_waiting` already wait and the
   expected wait (waiters ahead x the recent interval between releases) is within `max_wait_s`;
   otherwise it is refused at once (reason `full` or `wait`);
3. a waiter still without a slot after `max_wait_s` is refused then (reason `wait`);
4. `release` hands the slot to the first waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Hashable

from supernode.runtime.errors import ResourceExhaustedError

log = logging.getLogger(__name__)

_EWMA_WEIGHT = 0.2  # weight of the newest interval between releases in the wait estimate


class ShedError(ResourceExhaustedError):
    """A refusal at a gate; `reason` is `full`, `wait` or `per_key` (a metric label)."""

    def __init__(self, message: str, reason: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.reason = reason


class Gate:
    """At most `max_inflight` admitted at once; `max_per_key` per key (a connection, a client
    address; 0 = no per-key bound); a wait for a slot bounded by `max_wait_s` wall seconds
    (0 = refuse at once when full) and by `max_waiting` waiters (default: max(64, max_inflight))."""

    def __init__(
        self,
        max_inflight: int,
        max_wait_s: float = 0.0,
        *,
        max_per_key: int = 0,
        max_waiting: int | None = None,
        retry_after_s: float = 1.0,
        name: str = "gate",
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight: must be >= 1")
        self.max_inflight = max_inflight
        self.max_wait_s = max_wait_s
        self.max_per_key = max_per_key
        self.max_waiting = max(64, max_inflight) if max_waiting is None else max_waiting
        self.retry_after_s = retry_after_s
        self.name = name
        self.num_inflight = 0
        self._per_key: dict[Hashable, int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._interval_s: float | None = None  # EWMA of wall seconds between releases
        self._last_release: float | None = None

    @property
    def num_waiting(self) -> int:
        return len(self._waiters)

    def expected_wait_s(self, position: int) -> float | None:
        """Wall seconds until a waiter at `position` (1 = first) gets a slot; None before any release."""
        return None if self._interval_s is None else position * self._interval_s

    async def acquire(self, key: Hashable = None) -> None:
        """Admits, or raises ShedError."""
        if self.max_per_key and key is not None and self._per_key.get(key, 0) >= self.max_per_key:
            raise self._refusal("per_key", f"{self.max_per_key} requests in flight on this connection")
        if self.num_inflight < self.max_inflight and not self._waiters:
            self._take(key)
            return
        position = len(self._waiters) + 1
        expected = self.expected_wait_s(position)
        if self.max_wait_s <= 0 or position > self.max_waiting:
            raise self._refusal("full", f"{self.max_inflight} requests in flight")
        if expected is not None and expected > self.max_wait_s:
            raise self._refusal(
                "wait", f"expected wait {expected:.2f}s exceeds the {self.max_wait_s:g}s queueing bound"
            )
        await self._wait(key)

    def release(self, key: Hashable = None) -> None:
        now = time.monotonic()
        if self._last_release is not None:
            interval = now - self._last_release
            prior = self._interval_s
            self._interval_s = interval if prior is None else prior + _EWMA_WEIGHT * (interval - prior)
        self._last_release = now
        self.num_inflight -= 1
        if key is not None and key in self._per_key:
            self._per_key[key] -= 1
            if self._per_key[key] <= 0:
                del self._per_key[key]
        while self._waiters and self.num_inflight < self.max_inflight:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.num_inflight += 1  # the slot passes to the waiter, who counts its key itself
                waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def admit(self, key: Hashable = None) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    def _take(self, key: Hashable) -> None:
        self.num_inflight += 1
        if key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1

    async def _wait(self, key: Hashable) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait_s)
        except TimeoutError:
            if waiter.done():  # the slot arrived as the wait ended: keep it
                self._count_key(key)
                return
            waiter.cancel()
            self._discard(waiter)
            raise self._refusal("wait", f"no slot within the {self.max_wait_s:g}s queueing bound") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # admitted but the caller left: hand the slot on
            else:
                waiter.cancel()
                self._discard(waiter)
            raise
        self._count_key(key)

    def _count_key(self, key: Hashable) -> None:
        if key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def refusal(self, reason: str, what: str) -> ShedError:
        """The error a refusal at this gate raises (`reason` is its metric label)."""
        return self._refusal(reason, what)

    def _refusal(self, reason: str, what: str) -> ShedError:
        return ShedError(
            f"overloaded: {what}; retry after {self.retry_after_s:g}s", reason, self.retry_after_s
        )


class ShedLog:
    """Log lines for refusals without flooding: the first at once, then one summary per `every_s`."""

    def __init__(self, where: str, every_s: float = 1.0) -> None:
        self.where = where
        self.every_s = every_s
        self.num_total = 0
        self._pending: dict[str, int] = {}
        self._last_line = -float("inf")

    def on_shed(self, reason: str, detail: str) -> None:
        self.num_total += 1
        self._pending[reason] = self._pending.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(self._pending.items()))
            log.warning("%s shed requests (%s; %d in all): %s", self.where, counts, self.num_total, detail)
            self._pending.clear()
            self._last_line = now
