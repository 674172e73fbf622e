"""What every gRPC server does before and around a handler, whatever the service:

- a request that does not parse is INVALID_ARGUMENT naming the message (grpc.aio would answer
  UNKNOWN with the decoder's exception class);
- a `request_id` field is length- and charset-checked (INVALID_ARGUMENT naming the field);
- `Router.Generate` passes an admission `Gate` (bounded in flight, per connection, and in queueing
  time; beyond it RESOURCE_EXHAUSTED with the `retry-after-s` trailer, counted and logged), then the
  first-token queueing bound (runtime/start_delay.py: refused at once when its estimated wait behind
  the requests still waiting for their first token exceeds `router.max_queue_delay_s`), and the
  client's request id is made unique inside the system (a reused id must not collide with a
  concurrent request's decode reservation) while every chunk still carries the client's id;
- `Router.GenerateUpload` passes the same gate and bound (they count both methods' requests) when
  the call opens, before a chunk of its prompt is read, so a refused upload costs no spooling; its
  header's request id is checked and made unique as `Generate`'s;
- a call whose client deadline passed is counted and logged as a deadline expiry.

Metrics (the default registry, which every service's metrics port serves):
`supernode_shed_total{where,reason}` and `supernode_deadline_expired_total{where}`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from prometheus_client import Counter

from supernode.runtime import start_delay
from supernode.runtime.admission import Gate, ShedError, ShedLog
from supernode.runtime.config import Settings
from supernode.runtime.errors import (
    FIELD_KEY,
    MAX_REQUEST_ID_CHARS,
    ORIGIN_KEY,
    RETRY_AFTER_KEY,
    SupernodeError,
    check_request_id,
    sanitize,
)
from supernode.runtime.guard_context import (
    INTERNAL_ID_SUFFIX_CHARS,
    ClientIdContext,
    Context,
    DrainingContext,
    ForwardingContext,
    UploadIds,
    internal_id,
)
from supernode.runtime.loop_lag import LoopLag
from supernode.runtime.start_delay import StartDelayBound, Ticket

log = logging.getLogger(__name__)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in grpc's stubs only

GENERATE = "/supernode.v1.Router/Generate"
GENERATE_UPLOAD = "/supernode.v1.Router/GenerateUpload"
SHED_TOTAL = Counter("supernode_shed", "Requests refused by admission control.", ("where", "reason"))
DEADLINE_EXPIRED_TOTAL = Counter(
    "supernode_deadline_expired", "Calls that ran out of their deadline.", ("where",)
)
_deadline_log = ShedLog("deadline")  # reused for its rate-limited log line


def on_deadline_expired(where: str, detail: str) -> None:
    """Counts a deadline expiry and logs it (rate-limited)."""
    DEADLINE_EXPIRED_TOTAL.labels(where).inc()
    _deadline_log.on_shed(where, detail)


class _Malformed:
    """What the deserializer hands on when the bytes are not the expected message."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """See the module docstring; `gates` maps full method names to their admission gate."""

    def __init__(
        self, gates: dict[str, Gate], start_bounds: dict[str, StartDelayBound] | None = None
    ) -> None:
        """`start_bounds`: the first-token queueing bound of the server-streaming methods that have one."""
        self.gates = gates
        self.start_bounds = start_bounds or {}
        self.shed_logs = {method: ShedLog(method.rsplit("/", 1)[-1]) for method in gates}
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or (handler.request_streaming and method != GENERATE_UPLOAD):
            return handler  # other client-streaming RPCs (reflection) parse per message; left as they are
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        deserializer = _safe(handler.request_deserializer, method)
        # grpc sets the one behaviour that matches the handler's streaming flags.
        wrapped: Handler
        if handler.request_streaming:
            assert handler.stream_stream is not None
            wrapped = grpc.stream_stream_rpc_method_handler(
                self._wrap(handler.stream_stream, method, upload=True),
                handler.request_deserializer,
                handler.response_serializer,
            )
        elif handler.response_streaming:
            assert handler.unary_stream is not None
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method), deserializer, handler.response_serializer
            )
        else:
            assert handler.unary_unary is not None
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method), deserializer, handler.response_serializer
            )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, fn: Callable[..., Any], method: str, upload: bool = False) -> Callable[..., Any]:
        """`upload`: `fn` takes the iterator of a client-streaming call, admitted before it is read."""
        if inspect.isasyncgenfunction(fn):

            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                request, context, gate, key = await self._enter(request, context, method)
                try:
                    async for item in fn(request, context):
                        yield item
                except asyncio.CancelledError:
                    _note_deadline(context, method)
                    raise
                finally:
                    if gate is not None:
                        gate.release(key)

            return stream

        async def call(request: Any, context: Context) -> Any:
            if upload:
                context = DrainingContext(context, request)
                gate, key = await self._admit(context, method)
                ids = UploadIds(request, context)
                request, context = ids.messages(), ids
            else:
                request, context, gate, key = await self._enter(request, context, method)
            bound = self.start_bounds.get(method)
            ticket: Ticket | None = None
            try:
                if bound is not None:  # a server-streaming handler that writes its chunks
                    ticket = await self._start(bound, context, method)
                    context = _FirstWriteContext(context, lambda: bound.on_first_token(ticket))
                return await fn(request, context)
            except asyncio.CancelledError:
                _note_deadline(context, method)
                raise
            finally:
                if bound is not None and ticket is not None:
                    bound.on_end(ticket)
                if gate is not None:
                    gate.release(key)

        return call

    async def _enter(
        self, request: Any, context: Context, method: str
    ) -> tuple[Any, Context, Gate | None, str | None]:
        """Checks the request and admits it; aborts the RPC otherwise."""
        if isinstance(request, _Malformed):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"request: not a valid {request.message_type} message")  # fmt: skip
        request_id = getattr(request, "request_id", None)
        if isinstance(request_id, str) and request_id:
            # Inside the system an id carries the router's uniqueness suffix.
            limit = MAX_REQUEST_ID_CHARS + (0 if method == GENERATE else INTERNAL_ID_SUFFIX_CHARS)
            try:
                check_request_id(request_id, max_chars=limit)
            except SupernodeError as err:
                await _abort(context, err.grpc_code, err.message, field="request_id")
        gate, key = await self._admit(context, method)
        if method == GENERATE and request_id:
            context = ClientIdContext(context, request_id)
            request.request_id = internal_id(request_id)
        return request, context, gate, key

    async def _admit(self, context: Context, method: str) -> tuple[Gate | None, str | None]:
        """Passes the method's admission gate, if it has one; aborts RESOURCE_EXHAUSTED otherwise."""
        gate = self.gates.get(method)
        key = context.peer() if gate is not None else None
        if gate is not None:
            try:
                await gate.acquire(key)
            except ShedError as err:
                SHED_TOTAL.labels(method.rsplit("/", 1)[-1], err.reason).inc()
                self.shed_logs[method].on_shed(err.reason, err.message)
                await _abort(context, err.grpc_code, err.message, retry_after_s=err.retry_after_s)
        return gate, key

    async def _start(self, bound: StartDelayBound, context: Context, method: str) -> Ticket:
        """Passes the first-token queueing bound; aborts RESOURCE_EXHAUSTED otherwise."""
        try:
            return bound.admit(start_delay.queued_s(context.invocation_metadata()))
        except ShedError as err:
            SHED_TOTAL.labels(method.rsplit("/", 1)[-1], err.reason).inc()
            self.shed_logs[method].on_shed(err.reason, err.message)
            await _abort(context, err.grpc_code, err.message, retry_after_s=err.retry_after_s)
            raise  # not reached: abort raises


class _FirstWriteContext(ForwardingContext):
    """The servicer context, except that the first write (the first token) is reported."""

    def __init__(self, context: Context, on_first_write: Callable[[], None]) -> None:
        super().__init__(context)
        self._on_first_write: Callable[[], None] | None = on_first_write

    async def write(self, message: Any) -> None:
        if self._on_first_write is not None:
            self._on_first_write()
            self._on_first_write = None
        await self._context.write(message)


def _safe(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    message_type = method.rsplit("/", 1)[-1] + " request"

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # noqa: BLE001 - any decoder failure is the client's malformed input
            return _Malformed(message_type)

    return parse


def _note_deadline(context: Context, method: str) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        on_deadline_expired(method.rsplit("/", 1)[-1], "the client's deadline passed mid-call")


async def _abort(
    context: Context,
    code: grpc.StatusCode,
    message: str,
    *,
    field: str = "",
    retry_after_s: float | None = None,
) -> NoReturn:
    trailers = [(ORIGIN_KEY, "supernode")]
    if retry_after_s is not None:
        trailers.append((RETRY_AFTER_KEY, f"{retry_after_s:g}"))
    if field:
        trailers.append((FIELD_KEY, field))
    context.set_trailing_metadata(tuple(trailers))
    await context.abort(code, sanitize(message))


def guard_interceptors(settings: Settings) -> GuardInterceptor:
    """The interceptor with the router's admission gate (it applies only where Generate is served)."""
    cfg = settings.router
    gate = Gate(
        cfg.admission_max_inflight,
        cfg.admission_max_wait_s,
        max_per_key=cfg.admission_max_per_connection,
        retry_after_s=1.0,
        name="router",
    )
    # Without a bound nothing would be refused: skip the per-chunk bookkeeping altogether.
    max_delay_s = cfg.max_queue_delay_s
    bound = StartDelayBound(max_delay_s, loop_lag=LoopLag().lag_s) if max_delay_s > 0 else None
    bounds = {GENERATE: bound, GENERATE_UPLOAD: bound} if bound is not None else {}
    return GuardInterceptor({GENERATE: gate, GENERATE_UPLOAD: gate}, bounds)
