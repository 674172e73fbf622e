"""HTTP-level metrics of the frontend, in WALL seconds (the one place wall time is measured on purpose):
`supernode_http_requests_total{path,status}` and `supernode_http_request_wall_seconds{path}`.

A pure ASGI middleware (no per-request task or body copy) so it costs microseconds.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"}
)  # other paths are labelled "other" so scanners cannot grow the label set
WALL_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self._requests = Counter(
            "supernode_http_requests",
            "HTTP requests by path and status.",
            ("path", "status"),
            registry=registry,
        )
        self._seconds = Histogram(
            "supernode_http_request_wall_seconds", "Wall time from request to the last body byte.", ("path",),
            registry=registry, buckets=WALL_BUCKETS_S,
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._requests.labels(path, str(status)).inc()
            self._seconds.labels(path).observe(time.perf_counter() - start)
