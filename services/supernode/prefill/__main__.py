"""`python -m supernode.prefill`: one prefill instance."""

from __future__ import annotations

from supernode.prefill.service import build
from supernode.runtime import server
from supernode.runtime.config import get_settings


def main() -> None:
    settings = get_settings()
    server.run("prefill", settings, build(settings), settings.prefill.port)


if __name__ == "__main__":
    main()
