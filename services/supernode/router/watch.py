"""The router's calls to workers, watched: a call is given up when its worker is marked down, when it
passes its deadline, or, for a decode stream, when no chunk arrives for the liveness time.

A watched call is awaited (a unary call) or read (a stream) in the caller's own task. The caller can
still be woken with a failure while the worker sends nothing (a frozen process answers nothing and
closes nothing): giving up cancels the caller's task while it waits, and the cancellation comes out
as the `Abandoned` error (the way `asyncio.timeout` turns its own into TimeoutError; a cancellation
from elsewhere still propagates), so no task or queue is needed per call. A stream given up on while
its caller is busy elsewhere is closed in the background and fails at the caller's next read. One
background task checks every watched call each `tick_s` emulated seconds; it runs only while calls
are watched. Giving up cancels the call (the worker sees the RPC cancelled and frees what it held).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Generic, Protocol, TypeVar

from supernode.runtime.clock import Clock
from supernode.runtime.errors import InternalError, SupernodeError, UnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Watched(Protocol):
    """What a watch needs of the worker a call went to (router.workers.Worker)."""

    @property
    def address(self) -> str: ...
    @property
    def down_epoch(self) -> int: ...


class Abandoned(UnavailableError):
    """The router gave up on a call: `reason` is "worker_down", "liveness" or "deadline"."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, retry_after_s=1.0)
        self.reason = reason
        self.from_service = False  # the worker did not answer this; the router decided


class Watch(Generic[T]):
    """One stream in flight, read in the caller's task (see the module doc): iterate it for the
    worker's items; a failure (the worker's, or the router's decision to give up) is raised in their
    place."""

    def __init__(
        self, dog: Watchdog, worker: Watched, source: AsyncIterator[T], what: str,
        deadline_at: float, liveness_s: float, first_item_s: float,
    ) -> None:  # fmt: skip
        """`deadline_at`: emulated instant to give up at (inf = none); `liveness_s`: emulated seconds
        between items before giving up (inf = no bound); `first_item_s`: the same before the first."""
        self.dog = dog
        self.worker = worker
        self.what = what
        self.deadline_at = deadline_at
        self.liveness_s = liveness_s
        self.first_item_s = first_item_s
        self.num_items = 0
        self.epoch = worker.down_epoch
        self.last_item_s = dog.clock.now()
        self.is_done = False
        self.failure: Abandoned | None = None  # set when the router gave up on the call
        self._source = source
        self._reader: asyncio.Task[object] | None = None  # the caller's task while it waits for an item
        self._cancelling = 0  # cancellations of the reader asked before it started waiting (not ours)
        self._is_cancelled = False  # abandon cancelled the reader; the wait takes it back

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> T:
        if self.failure is not None:
            raise self.failure
        task = asyncio.current_task()
        assert task is not None, "a watched stream is read in a task"
        self._reader, self._cancelling = task, task.cancelling()
        try:
            item = await self._source.__anext__()
        except StopAsyncIteration:
            self._stop()
            raise
        except asyncio.CancelledError:
            if self._is_cancelled:
                self._is_cancelled = False
                if task.uncancel() <= self._cancelling and self.failure is not None:
                    raise self.failure from None
            raise
        except SupernodeError:
            self._stop()
            raise
        except Exception:  # a bug behind a peer: this call fails cleanly, the log keeps the trace
            log.exception("%s on %s failed", self.what, self.worker.address)
            self._stop()
            raise InternalError(f"{self.what}: internal error") from None
        finally:
            self._reader = None
        self.last_item_s = self.dog.clock.now()
        self.num_items += 1
        return item

    async def aclose(self) -> None:
        """Stops watching and closes the worker's stream (the RPC is cancelled if still running)."""
        self._stop()
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    def check(self, now: float) -> None:
        """Gives up on the call when its worker went down since it started, its deadline passed, or
        it has been silent for longer than the liveness time."""
        if self.is_done:
            return
        if _gone_or_late(self, now):
            return
        if now - self.last_item_s > (self.liveness_s if self.num_items else self.first_item_s):
            self.abandon(
                f"{self.what}: {self.worker.address} sent nothing for {now - self.last_item_s:.1f}s",
                "liveness",
            )

    def abandon(self, message: str, reason: str) -> None:
        """Fails the stream: a caller waiting on it is woken with `Abandoned`; one busy elsewhere gets
        it at its next read, and the worker's stream is closed now in the background."""
        self._stop()
        self.failure = Abandoned(message, reason)
        if self._reader is not None:
            self._is_cancelled = True
            self._reader.cancel()
        else:
            self.dog.close_later(self._source)

    def _stop(self) -> None:
        self.is_done = True
        self.dog.discard(self)


class _CallWatch:
    """A unary call awaited in the caller's task (see the module doc): given up when its worker went
    down since it started or its deadline passed."""

    def __init__(self, dog: Watchdog, worker: Watched, what: str, deadline_at: float) -> None:
        self.dog = dog
        self.worker = worker
        self.what = what
        self.deadline_at = deadline_at  # emulated instant to give up at (inf = none)
        self.epoch = worker.down_epoch
        self.is_done = False
        self.failure: Abandoned | None = None  # set when the router gave up on the call
        task = asyncio.current_task()
        assert task is not None, "a watched call runs in a task"
        self._task = task
        self._cancelling = task.cancelling()  # cancellations asked before this call (not ours)
        self._is_uncancelled = False

    def check(self, now: float) -> None:
        if not self.is_done:
            _gone_or_late(self, now)

    def abandon(self, message: str, reason: str) -> None:
        self.is_done = True
        self.dog.discard(self)
        self.failure = Abandoned(message, reason)
        self._task.cancel()

    def withdraw(self) -> bool:
        """Takes back the cancellation `abandon` asked for; True when no other cancellation is pending
        (the CancelledError seen was ours alone, so the caller gets `failure` instead)."""
        if self.failure is None or self._is_uncancelled:
            return False
        self._is_uncancelled = True
        return self._task.uncancel() <= self._cancelling


class Watchdog:
    def __init__(self, clock: Clock, tick_s: float) -> None:
        """`tick_s`: emulated seconds between checks of the watched calls."""
        self.clock = clock
        self.tick_s = tick_s
        self.watches: set[Watch[object] | _CallWatch] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # streams given up on, being closed

    def stream(
        self, worker: Watched, source: AsyncIterator[T], what: str, deadline_at: float = math.inf,
        liveness_s: float = math.inf, first_item_s: float = math.inf,
    ) -> Watch[T]:  # fmt: skip
        watch = Watch(self, worker, source, what, deadline_at, liveness_s, first_item_s)
        self._add(watch)  # type: ignore[arg-type]
        return watch

    async def call(self, worker: Watched, call: Awaitable[T], what: str, deadline_at: float) -> T:
        """Awaits a unary call under watch: its worker going down or `deadline_at` gives it up
        (`Abandoned`); an error that is not a domain error becomes INTERNAL (the trace is logged)."""
        watch = _CallWatch(self, worker, what, deadline_at)
        self._add(watch)
        try:
            return await call
        except asyncio.CancelledError:
            if watch.withdraw():
                assert watch.failure is not None
                raise watch.failure from None
            raise
        except SupernodeError:
            raise
        except Exception:  # a bug behind a peer: this call fails cleanly, the log keeps the trace
            log.exception("%s on %s failed", what, worker.address)
            raise InternalError(f"{what}: internal error") from None
        finally:
            watch.is_done = True
            self.discard(watch)
            watch.withdraw()  # given up just as the call returned: no cancellation may linger

    def _add(self, watch: Watch[object] | _CallWatch) -> None:
        self.watches.add(watch)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="router-watchdog")

    def discard(self, watch: Watch[T] | _CallWatch) -> None:
        self.watches.discard(watch)

    def close_later(self, source: AsyncIterator[object]) -> None:
        """Closes a worker's stream in the background (its reader is busy elsewhere)."""
        aclose = getattr(source, "aclose", None)
        if aclose is None:
            return
        task = asyncio.ensure_future(aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self.watches:
            await self.clock.sleep(self.tick_s)
            now = self.clock.now()
            for watch in list(self.watches):
                watch.check(now)


def _gone_or_late(call: Watch[Any] | _CallWatch, now: float) -> bool:
    """Gives up on `call` when its worker went down since it started or its deadline passed; True if so."""
    if call.worker.down_epoch != call.epoch:
        call.abandon(f"{call.what}: {call.worker.address} stopped answering", "worker_down")
    elif now >= call.deadline_at:
        call.abandon(f"{call.what}: no answer from {call.worker.address} within its deadline", "deadline")
    else:
        return False
    return True
