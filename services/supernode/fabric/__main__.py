"""`python -m supernode.fabric`: the UB fabric emulator."""

from __future__ import annotations

from supernode.fabric.service import build
from supernode.runtime import server
from supernode.runtime.config import get_settings


def main() -> None:
    settings = get_settings()
    server.run("fabric", settings, build(settings), settings.fabric.port)


if __name__ == "__main__":
    main()
