"""`python -m supernode.probe KIND`: the container healthcheck, cheap enough to run every few seconds.

It imports the standard library only (no gRPC runtime, CLI, settings model, load generator or
plotting: ~0.03 CPU-s a check instead of ~0.8), asks the service on this host for its
`grpc.health.v1` status (the frontend: HTTP `GET /health`), and exits 0 when it is SERVING / 200,
else 1. The port comes from the same `SUPERNODE_<KIND>__PORT` variable the
service reads; the defaults below equal `runtime/config.py`'s (a unit test holds them together). This
module reads those few variables itself because importing the settings model costs more than the
check; `runtime/config.py` stays the only reader for everything else.
"""

from __future__ import annotations

import os
import socket
import sys

DEFAULT_PORTS = {
    "fabric": 50051,
    "kvpool": 50052,
    "prefill": 50060,
    "decode": 50070,
    "router": 50050,
    "frontend": 8000,
}
_ANY_HOST = {"", "0.0.0.0", "::", "[::]"}
USAGE = f"usage: python -m supernode.probe {{{','.join(DEFAULT_PORTS)}}} [timeout_s]"


def target(kind: str, env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, int]:
    """(host, port) where the `kind` service of this container listens, from its SUPERNODE_* variables."""
    if kind not in DEFAULT_PORTS:
        raise ValueError(f"kind: must be one of {sorted(DEFAULT_PORTS)}, got {kind!r}")
    port_text = env.get(f"SUPERNODE_{kind.upper()}__PORT", str(DEFAULT_PORTS[kind]))
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"SUPERNODE_{kind.upper()}__PORT: must be a port 1-65535, got {port_text!r}")
    host = env.get("SUPERNODE_RUNTIME__BIND_HOST", "127.0.0.1")
    return ("127.0.0.1" if host in _ANY_HOST else host), int(port_text)


def check_grpc(host: str, port: int, timeout_s: float) -> bool:
    """True when grpc.health.v1 at host:port answers SERVING within timeout_s."""
    try:
        return health_status(host, port, timeout_s) == SERVING
    except (OSError, ValueError):
        return False


SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8
_METHOD = b"/grpc.health.v1.Health/Check"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(value: bytes) -> bytes:
    assert len(value) < 127, "header values here are short"
    return bytes([len(value)]) + value


def _request(authority: bytes) -> bytes:
    # HPACK: :method POST (static 3), :scheme http (static 6), then literals without indexing:
    # :path (static name 4), :authority (1), content-type (31), te (new name).
    headers = (
        b"\x83\x86\x04" + _literal(_METHOD) + b"\x01" + _literal(authority)
        + b"\x0f\x10" + _literal(b"application/grpc") + b"\x00" + _literal(b"te") + _literal(b"trailers")
    )  # fmt: skip
    empty_request = b"\x00\x00\x00\x00\x00"  # uncompressed, 0 bytes: HealthCheckRequest(service="")
    return (
        _PREFACE + _frame(_SETTINGS, 0, 0) + _frame(_HEADERS, _END_HEADERS, 1, headers)
        + _frame(_DATA, _END_STREAM, 1, empty_request)
    )  # fmt: skip


def health_status(host: str, port: int, timeout_s: float) -> int:
    """The `status` of grpc.health.v1 `Check(service="")` at host:port (-1 when the call failed).

    A unary gRPC call spoken directly over HTTP/2 with the standard library: importing the gRPC
    runtime alone costs ~0.2 CPU-s, more than the whole check should, and healthchecks run every
    few seconds in every container. Raises OSError on connection errors and timeouts.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(_request(f"{host}:{port}".encode()))
        reader = sock.makefile("rb")
        message = b""
        while True:
            head = reader.read(9)
            if len(head) < 9:
                break
            size, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = reader.read(size)
            if kind == _SETTINGS and not flags & _ACK:
                sock.sendall(_frame(_SETTINGS, _ACK, 0))
            elif kind == _PING and not flags & _ACK:
                sock.sendall(_frame(_PING, _ACK, 0, payload))
            elif kind == _DATA and stream == 1:
                message += payload[1 : size - payload[0]] if flags & _PADDED else payload
            if kind in (_RST_STREAM, _GOAWAY) or (stream == 1 and flags & _END_STREAM):
                break
    return _status(message)


def _status(message: bytes) -> int:
    """`status` (field 1, varint) of a length-prefixed HealthCheckResponse; -1 when there is none."""
    if len(message) < 5 or message[0] != 0:
        return -1
    body = message[5 : 5 + int.from_bytes(message[1:5], "big")]
    if not body:
        return 0  # proto3 leaves the default (UNKNOWN) out
    if body[0] != 0x08 or len(body) < 2 or body[1] > 0x7F:
        raise ValueError(f"unexpected health response {body!r}")
    return body[1]


def check_http(host: str, port: int, timeout_s: float) -> bool:
    """True when GET /health on host:port answers 200 within timeout_s."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        host, port = target(argv[0])
        timeout_s = float(argv[1]) if len(argv) == 2 else 2.0
    except ValueError as err:
        print(f"probe: {err}", file=sys.stderr)
        return 2
    check = check_http if argv[0] == "frontend" else check_grpc
    ok = check(host, port, timeout_s)
    print(f"{argv[0]} {host}:{port} {'SERVING' if ok else 'NOT SERVING'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
