"""Admission and abandoned work at the HTTP door, as one ASGI middleware on the generation routes.

Lifecycle of a POST to /v1/completions or /v1/chat/completions here:
1. `X-Request-Id` is checked (at most 128 characters of [A-Za-z0-9._:-]; else 400 naming it);
2. the request passes the frontend's `Gate`: at most `frontend.max_inflight` at once, at most
   `frontend.max_inflight_per_client` per client address (HTTP/1.1 carries one request at a time per
   connection, so the address is the unit a client controls), and a wait for a slot bounded by
   `frontend.max_queue_wait_s` (a request expected to wait longer is refused at once). A refusal is
   an immediate 429 with `Retry-After`, counted in `supernode_shed_total{where="frontend",reason}`
   and logged (rate-limited); after the router refused a request, requests beyond the number in
   flight then are refused here for the refusal's Retry-After (`reason="backend_full"`,
   frontend/backpressure.py); its arrival time is noted in the scope (`ARRIVED_AT`): the wall seconds
   from there to its router call go with the call (`queued_s`), so the router's first-token queueing
   bound counts the time it waited in this process too. The arrival is dated back by this process's
   event-loop lag (runtime/loop_lag.py): a loop that is behind runs this step that long after the
   request's bytes came in, and will relay its first token about as late. With
   `frontend.max_queue_delay_s` set, the frontend also keeps a first-token queueing bound of its own
   (runtime/start_delay.py, the router's, with this loop's lag added to each estimate), timed from
   here to the router's first chunk: it sees what the router cannot, a first token held up on its way
   back (the router's streams to this process backed up, this loop behind) and the wait before the
   router. Refused by it: 429 (`reason="queue_delay"`), decided before the body is read, so under a
   burst of connections this loop turns them away for a fraction of what serving them up to the
   router's refusal would cost;
3. while the app serves it, a client that disconnects (its socket closed) cancels the request: the
   app task is cancelled, which closes the SDK stream and so the router call, decode slot and KV;
4. a streaming client that stops reading is cut off: once its buffers are full (the connection's
   kernel send buffer, capped by `frontend.send_buffer_bytes` in frontend/server.py, asyncio's 64 KiB
   write buffer and the client's receive buffer), a body write that does not complete within
   `frontend.stream_stall_timeout_s` cancels the request, frees its slot and closes the connection;
   the relay closes its router streams at once (frontend/serving.py, `RelayResponse`).
Both are counted in `supernode_http_abandoned_total{kind=disconnect|stalled}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supernode.frontend.backpressure import BackendLimit
from supernode.frontend.errors import error_response
from supernode.runtime.admission import Gate, ShedError, ShedLog
from supernode.runtime.config import Settings
from supernode.runtime.errors import SupernodeError, check_request_id
from supernode.runtime.loop_lag import LoopLag
from supernode.runtime.stall import WriteWatch
from supernode.runtime.start_delay import StartDelayBound, Ticket

log = logging.getLogger(__name__)

GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})
ARRIVED_AT = "supernode.arrived_at"  # scope key: monotonic wall time the request reached the frontend
ON_FIRST_TOKEN = "supernode.on_first_token"  # scope key: call when the first token came from the router
CLIENT_CLOSED_STATUS = 499  # nginx's "client closed request", for the HTTP metrics only


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, registry: CollectorRegistry) -> None:
        cfg = settings.frontend
        self.app = app
        self.gate = Gate(
            cfg.max_inflight,
            cfg.max_queue_wait_s,
            max_per_key=cfg.max_inflight_per_client,
            retry_after_s=1.0,
            name="frontend",
        )
        self.stall_timeout_s = cfg.stream_stall_timeout_s
        self.backend = BackendLimit()
        self.loop_lag = LoopLag()
        self.start_bound = (
            StartDelayBound(cfg.max_queue_delay_s, loop_lag=self.loop_lag.lag_s)
            if cfg.max_queue_delay_s > 0
            else None
        )
        self.shed_log = ShedLog("frontend")
        self._shed = Counter(
            "supernode_shed", "Requests refused by admission control.", ("where", "reason"), registry=registry
        )
        self._abandoned = Counter(
            "supernode_http_abandoned",
            "Requests cancelled because the client left or stopped reading.",
            ("kind",),
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        # The router counts the wait from here (`queued_s`): from when the request's bytes came in,
        # which is as long before this step runs as this process's event loop is behind.
        scope[ARRIVED_AT] = time.monotonic() - self.loop_lag.lag_s()
        try:
            check_request_id(_header(scope, b"x-request-id"), field="X-Request-Id")
        except SupernodeError as err:
            await error_response(err, "X-Request-Id")(scope, receive, send)
            return
        client = scope.get("client")
        key = client[0] if client else None
        try:
            if self.backend.is_full(self.gate.num_inflight):
                raise self.gate.refusal("backend_full", "the router refused requests at this load")
            bound = self.start_bound
            ticket = bound.admit() if bound is not None else None
        except ShedError as err:
            self._refused(err)
            await error_response(err)(scope, receive, send)
            return
        try:
            await self.gate.acquire(key)
        except ShedError as err:
            self._end(ticket)
            self._refused(err)
            await error_response(err)(scope, receive, send)
            return
        if bound is not None and ticket is not None:
            scope[ON_FIRST_TOKEN] = functools.partial(bound.on_first_token, ticket)
        try:
            await self._serve(scope, receive, send)
        finally:
            self._end(ticket)
            self.gate.release(key)

    def _refused(self, err: ShedError) -> None:
        self._shed.labels("frontend", err.reason).inc()
        self.shed_log.on_shed(err.reason, err.message)

    def _end(self, ticket: Ticket | None) -> None:
        if ticket is not None and self.start_bound is not None:
            self.start_bound.on_end(ticket)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs the app, cancelling it when the client disconnects or stops reading."""
        body_read, disconnected, stalled = asyncio.Event(), asyncio.Event(), asyncio.Event()
        started = complete = False

        async def app_receive() -> Message:
            if body_read.is_set():  # the body is in: from here on only a disconnect can come
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()
            return message

        watch = WriteWatch(self.stall_timeout_s, stalled.set)

        async def app_send(message: Message) -> None:
            nonlocal started, complete
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 429:  # the router is full at this load
                    self.backend.on_refused(self.gate.num_inflight, _retry_after(message))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            if message["type"] != "http.response.body" or not message.get("body"):
                await send(message)
                return
            await watch.write(send(message))  # stalled: the supervisor cancels this task

        async def watch_disconnect() -> None:
            await body_read.wait()
            while not disconnected.is_set():
                if (await receive())["type"] == "http.disconnect":
                    disconnected.set()

        app_task = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        watcher = asyncio.ensure_future(watch_disconnect())
        gone = asyncio.ensure_future(_first(disconnected.wait, stalled.wait))
        try:
            await asyncio.wait({app_task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if app_task.done() or complete:  # after the last byte, "disconnect" is just the end
                await app_task
                return
            kind = "stalled" if stalled.is_set() else "disconnect"
            self._abandoned.labels(kind).inc()
            log.info("%s: client %s; cancelling its request", scope["path"], _WHAT[kind])
            await _cancel(app_task)
            if not started:
                await send({"type": "http.response.start", "status": CLIENT_CLOSED_STATUS, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            return
        finally:
            watch.close()
            for task in (app_task, watcher, gone):
                await _cancel(task)


_WHAT = {"stalled": "stopped reading its stream", "disconnect": "disconnected"}


async def _first(*waits: Callable[[], Awaitable[object]]) -> None:
    tasks = [asyncio.ensure_future(wait()) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _cancel(task: asyncio.Future[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _retry_after(start: Message) -> float | None:
    for key, value in start.get("headers", ()):
        if key.lower() == b"retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""
