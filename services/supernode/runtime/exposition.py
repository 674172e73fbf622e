"""Prometheus exposition that keeps the names the metrics declare, whatever format the scraper asks for.

prometheus_client (through 0.26 at least, client_python issue #1177) answers an OpenMetrics request
with `escaping=underscores` by writing `# HELP vllm:x` but samples named `vllm_x`: Prometheus then
stores only `vllm_*` series, and every query or dashboard written against vLLM's names comes back
empty. Every metric name here is a valid legacy Prometheus name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), so
nothing needs escaping at all: OpenMetrics is written with `allow-utf-8` (which, for legacy-valid
names, writes them verbatim) and the classic text format as it is. The content type names no
escaping scheme because none was applied.

`negotiate(accept)` picks the format from an Accept header (highest q first, ties in order);
`exposition(accept, *registries)` renders; `serve(port, host, *registries)` runs the HTTP endpoint
in a daemon thread for services that have no HTTP app of their own.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPENMETRICS = "openmetrics"
TEXT = "text"


def negotiate(accept: str | None) -> str:
    """`OPENMETRICS` or `TEXT` for an Accept header: the supported type with the highest q wins."""
    best, best_q = TEXT, -1.0
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        kind = {"application/openmetrics-text": OPENMETRICS, "text/plain": TEXT}.get(media)
        if kind is None:
            continue
        q = 1.0
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = kind, q
    return best


def render_text(*registries: CollectorRegistry) -> bytes:
    """The classic text format (0.0.4) of `registries`, concatenated."""
    return b"".join(generate_latest(registry) for registry in registries)


def render_openmetrics(*registries: CollectorRegistry) -> bytes:
    """OpenMetrics 1.0 of `registries` as one exposition (a single `# EOF`), names verbatim."""
    union = CollectorRegistry(auto_describe=False)
    union.register(Union(registries))
    return bytes(openmetrics.generate_latest(union, escaping=openmetrics.ALLOWUTF8))


def exposition(accept: str | None, *registries: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) answering a scrape whose Accept header is `accept`."""
    if negotiate(accept) == OPENMETRICS:
        return render_openmetrics(*registries), OPENMETRICS_CONTENT_TYPE
    return render_text(*registries), TEXT_CONTENT_TYPE


class Union(Collector):
    """Collects every metric of several registries, so one endpoint serves them all."""

    def __init__(self, registries: Iterable[CollectorRegistry]) -> None:
        self._registries = tuple(registries)

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes every few seconds are not worth a log line each."""


def wsgi_app(registry: CollectorRegistry) -> Callable[..., list[bytes]]:
    """A WSGI app answering GET/HEAD /metrics (any path) with the negotiated exposition."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body, content_type = exposition(environ.get("HTTP_ACCEPT"), registry)
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app


def serve(port: int, host: str, registry: CollectorRegistry) -> WSGIServer:
    """Serves `registry` on http://host:port/ in a daemon thread; raises OSError if the port is taken."""
    server = make_server(host, port, wsgi_app(registry), _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    return server
