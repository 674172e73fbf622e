"""`python -m supernode.decode`: one decode instance."""

from __future__ import annotations

from supernode.decode.service import build
from supernode.runtime import server
from supernode.runtime.config import get_settings


def main() -> None:
    settings = get_settings()
    server.run("decode", settings, build(settings), settings.decode.port)


if __name__ == "__main__":
    main()
