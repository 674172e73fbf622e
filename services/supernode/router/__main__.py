"""`python -m supernode.router`: the router."""

from __future__ import annotations

from supernode.router.service import build
from supernode.runtime import server
from supernode.runtime.auth import token_interceptors
from supernode.runtime.config import get_settings


def main() -> None:
    settings = get_settings()
    interceptors = token_interceptors(settings.router.auth_token)
    server.run("router", settings, build(settings), settings.router.port, interceptors)


if __name__ == "__main__":
    main()
