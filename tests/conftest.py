"""Shared fixtures: settings factories, a real redis-server, in-process service hosts."""

from __future__ import annotations

import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from supernode.launcher import spawn_redis
from supernode.runtime.config import Settings
from supernode.runtime.server import ServiceHost


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(**sections: dict[str, Any]) -> Settings:
    """Settings with per-section overrides, e.g. make_settings(decode={"num_dies": 2})."""
    base = Settings()
    data = base.model_dump()
    for section, values in sections.items():
        data[section].update(values)
    return Settings.model_validate(data)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the session, on a free port, LRU-capped, no persistence."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not installed: run `make setup` (installs Debian's redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = spawn_redis(port, "256mb", str(workdir), workdir / "redis.log")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture
async def host_factory() -> AsyncIterator[Callable[..., Any]]:
    """Starts services in-process on 127.0.0.1:0; stops them (drained) at the end of the test."""
    hosts: list[ServiceHost] = []

    async def start(settings: Settings, build: Callable[..., Any]) -> ServiceHost:
        host = ServiceHost(settings, build, 0)
        await host.start()
        hosts.append(host)
        return host

    yield start
    for host in reversed(hosts):
        if host.drain.is_admitting:
            await host.drain_and_stop()
