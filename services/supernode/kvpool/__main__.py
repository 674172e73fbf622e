"""`python -m supernode.kvpool`: the KV pool service."""

from __future__ import annotations

from supernode.kvpool.service import build
from supernode.runtime import server
from supernode.runtime.config import get_settings


def main() -> None:
    settings = get_settings()
    server.run("kvpool", settings, build(settings), settings.kvpool.port)


if __name__ == "__main__":
    main()
