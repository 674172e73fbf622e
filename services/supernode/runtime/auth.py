"""Optional bearer token on a gRPC server: `authorization: Bearer <token>` metadata, checked per call.

Health checks stay open (orchestrators probe without credentials; the answer reveals nothing). Any
other method without the token ends with UNAUTHENTICATED before its handler runs. An empty token
turns the check off.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from supernode.runtime.guard_context import Context

AUTH_KEY = "authorization"
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_DENIED = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries `token` (empty when there is no token)."""
    return ((AUTH_KEY, f"Bearer {token}"),) if token else ()


def _presented(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == AUTH_KEY and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


async def _deny_unary(request: Any, context: Context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


async def _deny_stream(request: Any, context: Context) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
    yield  # pragma: no cover - abort raises; this makes the function an async generator


def _denying(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""
    deserialize = handler.request_deserializer
    serialize = handler.response_serializer
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_deny_stream, deserialize, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_deny_unary, deserialize, serialize)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_deny_stream, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(_deny_unary, deserialize, serialize)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Admits a call when its bearer token equals `token` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token: must be non-empty (leave the interceptor out to disable auth)")
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if hmac.compare_digest(_presented(handler_call_details).encode(), self._token):
            return handler
        return _denying(handler)


def token_interceptors(token: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server runs for `token` ('' = none)."""
    return [BearerTokenInterceptor(token)] if token else []
