"""Domain errors, each with its gRPC status and HTTP status, mapped in this one place.

Services raise these; `runtime.server` turns them into gRPC statuses, the SDK turns gRPC statuses back
into them, and the HTTP frontend into OpenAI-style error bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import grpc


class SupernodeError(Exception):
    """Base of every domain error. `field` names the offending request field when there is one."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500
    openai_type: str = "server_error"

    def __init__(self, message: str, *, field: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s
        self.from_service = True  # False when a call failed in the transport (peer down, unreachable)

    @property
    def code(self) -> str:
        """The gRPC status name, e.g. "INVALID_ARGUMENT"."""
        return self.grpc_code.name


class InvalidArgumentError(SupernodeError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    openai_type = "invalid_request_error"


class FailedPreconditionError(SupernodeError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    openai_type = "invalid_request_error"


class NotFoundError(SupernodeError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    openai_type = "invalid_request_error"


class ResourceExhaustedError(SupernodeError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    openai_type = "rate_limit_error"


class UnavailableError(SupernodeError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    openai_type = "server_error"


class DeadlineExceededError(SupernodeError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    openai_type = "timeout_error"


class DataLossError(SupernodeError):
    grpc_code = grpc.StatusCode.DATA_LOSS
    http_status = 500
    openai_type = "server_error"


class UnauthenticatedError(SupernodeError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    openai_type = "authentication_error"


class InternalError(SupernodeError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[SupernodeError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgumentError,
        FailedPreconditionError,
        NotFoundError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        DataLossError,
        UnauthenticatedError,
        InternalError,
    )
}
_BY_CODE[grpc.StatusCode.CANCELLED] = UnavailableError
_BY_CODE[grpc.StatusCode.UNKNOWN] = InternalError

RETRY_AFTER_KEY = "retry-after-s"  # trailer: seconds to wait before retrying
FIELD_KEY = "field"  # trailer: the request field an INVALID_ARGUMENT is about
ORIGIN_KEY = "sn-origin"  # trailer: set when a Supernode service answered (not the transport failing)


def from_rpc_error(err: grpc.RpcError) -> SupernodeError:
    """The domain error for a failed call (what the SDK and inter-service clients raise)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    retry_after: float | None = None
    field = ""
    from_service = False
    # grpc's stubs type the trailers as objects with `.key`/`.value`; grpc gives (key, value) pairs.
    trailers: Iterable[tuple[str, str | bytes]] | None = (
        err.trailing_metadata() if hasattr(err, "trailing_metadata") else None  # type: ignore[assignment]
    )
    for key, value in trailers or ():
        if key == RETRY_AFTER_KEY:
            try:
                retry_after = float(value)
            except (TypeError, ValueError):
                retry_after = None
        elif key == FIELD_KEY:
            field = str(value)
        elif key == ORIGIN_KEY:
            from_service = True
    cls = _BY_CODE.get(code, InternalError)
    domain = cls(sanitize(details), field=field, retry_after_s=retry_after)
    domain.from_service = from_service
    return domain


def invalid(field: str, rule: str) -> InvalidArgumentError:
    """An INVALID_ARGUMENT naming the field and the rule it broke."""
    return InvalidArgumentError(f"{field}: {rule}", field=field)


MAX_REQUEST_ID_CHARS = 128  # longer request ids are refused (they end up in logs, metrics and keys)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]*$")


def check_request_id(
    request_id: str, field: str = "request_id", max_chars: int = MAX_REQUEST_ID_CHARS
) -> None:
    """Raises INVALID_ARGUMENT naming `field` unless the id is at most `max_chars` characters of
    [A-Za-z0-9._:-] (empty is fine: the router assigns one)."""
    if len(request_id) > max_chars:
        raise invalid(field, f"must be at most {max_chars} characters, got {len(request_id)}")
    if not _REQUEST_ID.match(request_id):
        raise invalid(field, "may contain only letters, digits and . _ : -")


# What a message to a client must not carry: internal addresses (URLs, IPs, host:port, gRPC's
# "ipv4:" peers), exception class names, file paths. Logs keep the original.
_LEAKS = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<internal>"),
    (re.compile(r"(?:ipv[46]:)?\[[0-9a-fA-F.%]*:[0-9a-fA-F:.%]*\](?::\d+)?"), "<internal>"),
    (re.compile(r"\b(?:ipv[46]:)?\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<internal>"),
    (re.compile(r"\b[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*:\d{2,5}\b"), "<internal>"),
    (re.compile(r"<class '[^']*'>"), "error"),
    (re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Z])"), ""),  # module path of a class name
    (re.compile(r"\b[A-Z][A-Za-z0-9]*(?:Error|Exception|Exit|Interrupt)\b(?::\s*)?"), ""),
    (re.compile(r"(?:/[\w.-]+){2,}\.py\b(?:, line \d+)?"), "<internal>"),
)


def sanitize(message: str) -> str:
    """`message` with internal hosts, ports, URLs, file paths and exception class names removed."""
    for pattern, replacement in _LEAKS:
        message = pattern.sub(replacement, message)
    message = re.sub(r"(<internal>)(?:[ ,]*<internal>)+", r"\1", message)
    message = re.sub(r"\s{2,}", " ", message).strip(" :;,")
    return message or "internal error"
