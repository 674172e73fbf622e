"""gRPC server bootstrap shared by every service: health, reflection, error mapping, graceful drain.

Shutdown is a small state machine (STYLE.md #8): on SIGTERM the health status turns NOT_SERVING and
new RPCs get UNAVAILABLE; in-flight RPCs finish up to `drain_timeout_s`; then the service's own
`stop()` runs, the server stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, NoReturn, Protocol, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from supernode.runtime.config import Settings
from supernode.runtime.errors import (
    FIELD_KEY,
    ORIGIN_KEY,
    RETRY_AFTER_KEY,
    DeadlineExceededError,
    InternalError,
    SupernodeError,
    UnavailableError,
    sanitize,
)
from supernode.runtime.guard import GuardInterceptor, guard_interceptors, on_deadline_expired
from supernode.runtime.guard_context import Context
from supernode.runtime.stall import write_all

log = logging.getLogger(__name__)


class Drain:
    """Counts in-flight RPCs and refuses new ones once draining, or once the service has failed."""

    def __init__(self) -> None:
        self.is_admitting = True
        self.fault = ""  # why the service stopped serving ("" while it serves)
        self.num_inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._fault_listeners: list[Callable[[str], None]] = []

    def on_fault(self, listener: Callable[[str], None]) -> None:
        self._fault_listeners.append(listener)

    def fail(self, reason: str) -> None:
        """The service can serve no more (its step loop failed): new RPCs get UNAVAILABLE with
        `reason`, health turns NOT_SERVING (the host listens)."""
        if self.fault:
            return
        self.fault = reason
        for listener in self._fault_listeners:
            listener(reason)

    @contextlib.contextmanager
    def track(self) -> Any:
        if self.fault:
            raise UnavailableError(self.fault, retry_after_s=1.0)
        if not self.is_admitting:
            raise UnavailableError("service is draining; retry on another instance", retry_after_s=1.0)
        self.num_inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.num_inflight -= 1
            if self.num_inflight == 0:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until nothing is in flight; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


class Service(Protocol):
    """What a service hands the host: its gRPC service names and its lifecycle hooks."""

    service_names: tuple[str, ...]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _abort(context: Context, err: SupernodeError) -> NoReturn:
    """Ends the RPC with the error's status; the message is sanitized (no internal host, port or
    exception class reaches a client; the log keeps the original)."""
    if isinstance(err, DeadlineExceededError):
        on_deadline_expired("handler", err.message)
    trailers = [(ORIGIN_KEY, "supernode")]
    if err.retry_after_s is not None:
        trailers.append((RETRY_AFTER_KEY, f"{err.retry_after_s:g}"))
    if err.field:
        trailers.append((FIELD_KEY, err.field))
    context.set_trailing_metadata(tuple(trailers))
    await context.abort(err.grpc_code, sanitize(err.message))


def _unexpected(exc: Exception) -> InternalError:
    """A bug, not a domain error: logged with its traceback, answered INTERNAL without details."""
    log.exception("unexpected error in a handler")
    return InternalError("internal error")


class _Servicer(Protocol):
    """What a decorated handler's servicer holds: the host's drain and the settings."""

    drain: Drain
    settings: Settings


S = TypeVar("S", bound=_Servicer)
Req = TypeVar("Req")  # the request message (or, for a client stream, the messages' iterator)
Rep = TypeVar("Rep")  # the reply message
UnaryFn: TypeAlias = Callable[[S, Req, Context], Awaitable[Rep]]  # a servicer's unary method
StreamFn: TypeAlias = Callable[[S, Req, Context], AsyncGenerator[Rep, None]]  # its streaming one
Handler: TypeAlias = Callable[[S, Req, Context], Coroutine[Any, Any, Rep]]  # what grpc.aio runs


def unary(track: bool = True) -> Callable[[UnaryFn[S, Req, Rep]], Handler[S, Req, Rep]]:
    """Decorates a unary handler: counts it for drain and maps domain errors to gRPC statuses."""

    def wrap(fn: UnaryFn[S, Req, Rep]) -> Handler[S, Req, Rep]:
        @functools.wraps(fn)
        async def handler(self: S, request: Req, context: Context) -> Rep:
            try:
                if track:
                    with self.drain.track():
                        return await fn(self, request, context)
                return await fn(self, request, context)
            except SupernodeError as err:
                await _abort(context, err)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - the client gets INTERNAL, the log the traceback
                await _abort(context, _unexpected(exc))

        return handler

    return wrap


def stream(track: bool = True) -> Callable[[StreamFn[S, Req, Rep]], Handler[S, Req, None]]:
    """Decorates a server-streaming handler (an async generator) like `unary`.

    The handler becomes a coroutine that writes each item, so when the client goes away the task is
    cancelled at once and the generator is closed then (its `finally` blocks run now, not whenever
    the generator is garbage-collected). A client that stops reading is cut off once a write has
    waited `runtime.stream_stall_timeout_s` (runtime/stall.py).
    """

    def wrap(fn: StreamFn[S, Req, Rep]) -> Handler[S, Req, None]:
        @functools.wraps(fn)
        async def handler(self: S, request: Req, context: Context) -> None:
            stall_s = self.settings.runtime.stream_stall_timeout_s
            try:
                with self.drain.track() if track else contextlib.nullcontext():
                    async with contextlib.aclosing(fn(self, request, context)) as items:
                        await write_all(context, items, stall_s, fn.__name__)
            except SupernodeError as err:
                await _abort(context, err)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - the client gets INTERNAL, the log the traceback
                await _abort(context, _unexpected(exc))

        return handler

    return wrap


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Message limits, and no SO_REUSEPORT: gRPC sets it by default on Linux, so a second server on a
    port already taken would bind too and the kernel would split the connections between the two
    (clients of one service reaching another answer UNIMPLEMENTED); without it, the second fails to
    start with a clear error."""
    limit = settings.runtime.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ]


class ServiceHost:
    """Runs one service on a grpc.aio server; tests use it directly on port 0."""

    def __init__(
        self,
        settings: Settings,
        build: Callable[[grpc.aio.Server, Drain], Service],
        port: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.settings = settings
        self.drain = Drain()
        self.guard: GuardInterceptor = guard_interceptors(settings)
        # The token check first: an unauthenticated call takes no admission slot.
        self.server = grpc.aio.server(
            options=server_options(settings), interceptors=[*interceptors, self.guard]
        )
        self.service = build(self.server, self.drain)
        self.drain.on_fault(self._on_fault)
        self._fault_task: asyncio.Task[None] | None = None
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*self.service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        where = f"{settings.runtime.bind_host}:{port}"
        try:
            self.port = self.server.add_insecure_port(where)
        except RuntimeError as err:  # grpc's own names no cause
            raise RuntimeError(f"could not bind {where}: is another process listening on it?") from err
        if self.port == 0:
            raise RuntimeError(f"could not bind {where}: is another process listening on it?")

    @property
    def address(self) -> str:
        return f"{self.settings.runtime.bind_host}:{self.port}"

    async def start(self) -> None:
        await self.service.start()
        await self.server.start()
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)

    async def drain_and_stop(self) -> bool:
        """Stops admitting, waits for in-flight work, stops. Returns True when the drain completed."""
        self.drain.is_admitting = False
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        drained = await self.drain.wait_idle(self.settings.runtime.drain_timeout_s)
        if not drained:
            log.warning("drain deadline passed with %d RPCs in flight", self.drain.num_inflight)
        await self.service.stop()
        await self.server.stop(grace=1.0)
        return drained

    def _on_fault(self, reason: str) -> None:
        log.error("service failed (%s); health NOT_SERVING", reason)
        self._fault_task = asyncio.ensure_future(self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING))

    async def _set_status(self, status: int) -> None:
        for name in ("", *self.service.service_names):
            await self.health.set(name, status)


def configure_logging(settings: Settings, name: str) -> None:
    logging.basicConfig(
        level=settings.runtime.log_level,
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s",
    )


async def serve(
    name: str,
    settings: Settings,
    build: Callable[[grpc.aio.Server, Drain], Service],
    port: int,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    """Runs a service until SIGTERM/SIGINT, then drains and returns (the process exits 0)."""
    host = ServiceHost(settings, build, port, interceptors)
    await host.start()
    log.info("%s listening on %s", name, host.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the drain short
        loop.add_signal_handler(sig, lambda: log.info("%s: already draining", name))
    log.info("%s draining (%d in flight)", name, host.drain.num_inflight)
    drained = await host.drain_and_stop()
    log.info("%s stopped (drained=%s)", name, drained)
    for sig in (signal.SIGTERM, signal.SIGINT):  # stopped: from here to exit, signals change nothing
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


def run(
    name: str,
    settings: Settings,
    build: Callable[[grpc.aio.Server, Drain], Service],
    port: int,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    """Entry point of `python -m supernode.<name>`."""
    configure_logging(settings, name)
    asyncio.run(serve(name, settings, build, port, interceptors))
