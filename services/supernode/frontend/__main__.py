"""`python -m supernode.frontend`: the OpenAI-compatible HTTP frontend on runtime.bind_host:frontend.port."""

from __future__ import annotations

import gc
import logging
import signal
import sys
from types import FrameType

import uvicorn

from supernode.frontend.app import create_app
from supernode.frontend.server import uvicorn_config
from supernode.runtime.config import get_settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn drains, restores this handler and re-raises the signal it caught; exit 0 instead of dying.
    sys.exit(0)


def main() -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests (up to runtime.drain_timeout_s)."""
    settings = get_settings()
    logging.basicConfig(
        level=settings.runtime.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _exit_cleanly)
    app = create_app(settings)
    host, port = settings.runtime.bind_host, settings.frontend.port
    logging.getLogger("supernode.frontend").info(
        "frontend on http://%s:%d, router at %s", host, port, settings.router.address
    )
    # What the app holds for its lifetime (the tokenizer's vocabulary above all) is left out of the
    # collector's full passes: one took 0.27 s mid-burst, with every stream's tokens waiting on it.
    gc.collect()
    gc.freeze()
    uvicorn.Server(uvicorn_config(app, settings, host=host, port=port)).run()


if __name__ == "__main__":
    main()
