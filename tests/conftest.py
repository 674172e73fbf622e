"""Shared fixtures: settings factories, a real redis-server, in-process service hosts."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from supernode.kvpool.local_cluster import LocalRedisCluster
from supernode.processes import free_port, spawn_redis
from supernode.runtime.config import Settings
from supernode.runtime.server import ServiceHost


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


def _need_redis_cluster_tools() -> None:
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed: run `make setup` (installs redis-server and redis-tools)")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A real Redis Cluster for the session: 3 masters + 3 replicas on free ports, 64 MB LRU per node.

    Tests that kill or restart nodes take their own from `redis_cluster_factory` instead."""
    _need_redis_cluster_tools()
    cluster = LocalRedisCluster(3, 1, "64mb", workdir=tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LocalRedisCluster]]:
    """Starts fresh clusters (3 masters + 3 replicas unless told) that a test may break; stops them after."""
    _need_redis_cluster_tools()
    clusters: list[LocalRedisCluster] = []

    def start(num_masters: int = 3, num_replicas: int = 1, maxmemory: str = "64mb") -> LocalRedisCluster:
        workdir = tmp_path_factory.mktemp("redis-cluster")
        cluster = LocalRedisCluster(num_masters, num_replicas, maxmemory, workdir=workdir)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()


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
