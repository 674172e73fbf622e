"""Running the app under uvicorn: in the foreground (`serve`, SIGTERM drains) or as a background task.

SIGTERM / SIGINT are uvicorn's: stop accepting, let in-flight responses (streams included) finish for
up to `runtime.drain_timeout_s`, run the app's shutdown (closes the router client), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI

from supernode.runtime.config import Settings

logger = logging.getLogger(__name__)


def uvicorn_config(app: FastAPI, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.runtime.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.runtime.drain_timeout_s)),
        log_config=None,  # keep the process's logging setup
        http=_bounded_send_buffer(settings.frontend.send_buffer_bytes),
    )


def _bounded_send_buffer(num_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol with each connection's kernel send buffer capped at `num_bytes`
    (SO_SNDBUF; Linux doubles it). Autotuned, a loopback send buffer grows to megabytes, and a client
    that stops reading would hold that much of its stream before a write blocks and the stall bound
    (frontend/admission.py) can start counting."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    def connection_made(self: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, num_bytes)
        AutoHTTPProtocol.connection_made(self, transport)

    return type("BoundedSendBufferProtocol", (AutoHTTPProtocol,), {"connection_made": connection_made})


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone (it runs inside a test)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_in_background(
    app: FastAPI, settings: Settings, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serves `app` on an ephemeral port while the block runs; yields its base URL."""
    server = _InProcessServer(uvicorn_config(app, settings, host=host, port=0))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
