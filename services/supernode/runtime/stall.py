"""Cutting off a server stream whose client stopped reading.

A gRPC server stream buffers what its client has not read up to the HTTP/2 flow-control window; once
that is full, a write waits for the client. A write that waits longer than
`runtime.stream_stall_timeout_s` wall seconds ends the stream with RESOURCE_EXHAUSTED (the client's
buffer is full and it is not taking from it), which closes the handler's generator and so everything
it holds: for `Router.Generate` the decode stream, its slot and its KV, for `Decode.Decode` the
sequence's slot. Counted in `supernode_stalled_streams_total{where}` (the process's default registry)
with a rate-limited WARNING line.

`WriteWatch` times the writes: one timer per stream and timeout period follows the write pending, where
a timeout around each write cost a timer (`asyncio.timeout`, ~5 us here) or a task and a timer
(`asyncio.wait_for`, ~19 us) per streamed token. The HTTP frontend watches its body writes with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter

from supernode.runtime.admission import ShedLog
from supernode.runtime.errors import ResourceExhaustedError

STALLED_TOTAL = Counter(
    "supernode_stalled_streams", "Server streams cut off because the client stopped reading.", ("where",)
)
_logs: dict[str, ShedLog] = {}


_TIMER_SLACK_S = 1e-3  # a timer may fire a clock tick before its time


class WriteWatch:
    """Calls `on_stall` once a write has been pending for `timeout_s`: its reader stopped reading.

    A write that completes at once (the usual case: the transport takes the bytes) only notes when it
    began; the one timer, armed by the first write, checks the write pending when it fires and re-arms
    for that write's own deadline. A steady stream of quick writes never trips it, however long."""

    def __init__(self, timeout_s: float, on_stall: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self.on_stall = on_stall
        self._since: float | None = None  # loop time the pending write began; None: none pending
        self._timer: asyncio.TimerHandle | None = None

    async def write(self, pending: Awaitable[None]) -> None:
        """Awaits one write (`pending`: the send or write call, not yet awaited)."""
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._since + self.timeout_s, self._check, loop)
        try:
            await pending
        finally:
            self._since = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._since is None:  # no write pending: the next one arms the timer again
            return
        due = self._since + self.timeout_s
        if loop.time() >= due - _TIMER_SLACK_S:
            self.on_stall()
        else:  # a later write is pending: wait out its own time
            self._timer = loop.call_at(due, self._check, loop)


async def write_all(
    context: grpc.aio.ServicerContext, items: AsyncIterator[Any], stall_s: float, where: str
) -> None:
    """Writes every item; raises ResourceExhaustedError once a write has waited more than `stall_s`
    (the write is cancelled, as `asyncio.timeout` would: the task is cancelled and the cancellation
    taken back, unless someone else cancelled it too)."""
    task = asyncio.current_task()
    assert task is not None
    stalled = False

    def cut() -> None:
        nonlocal stalled
        stalled = True
        task.cancel()

    watch = WriteWatch(stall_s, cut)
    try:
        async for item in items:
            try:
                await watch.write(context.write(item))
            except asyncio.CancelledError:
                if stalled and task.uncancel() == 0:
                    break
                raise
    finally:
        watch.close()
    if stalled:
        STALLED_TOTAL.labels(where).inc()
        message = f"stream: the client read nothing for {stall_s:g}s with its buffer full; cut off"
        _logs.setdefault(where, ShedLog(f"{where} (stalled readers)")).on_shed("stalled", message)
        raise ResourceExhaustedError(message, retry_after_s=1.0)
