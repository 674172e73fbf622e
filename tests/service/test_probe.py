"""The container healthcheck probe against real servers: right answers, right port, few imports."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supernode import probe
from supernode.runtime.auth import token_interceptors
from supernode.runtime.config import Settings
from supernode.runtime.server import ServiceHost
from tests.conftest import free_port, make_settings
from tests.service.test_router import Fake

HEAVY = ("grpc", "google.protobuf", "pydantic", "numpy", "matplotlib", "typer", "rich", "supernode.cli",
         "supernode.loadgen", "supernode.runtime", "fastapi", "httpx")  # fmt: skip

RUN_PROBE = """
import json, runpy, sys
sys.argv = ["probe", *sys.argv[1:]]
try:
    runpy.run_module("supernode.probe", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def run_probe(kind: str, **env: str) -> tuple[int, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", RUN_PROBE, kind, "1.0"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["code"], result["modules"]


def test_default_ports_are_the_settings_defaults():
    settings = Settings()
    for kind, port in probe.DEFAULT_PORTS.items():
        assert getattr(settings, kind).port == port, kind
        assert probe.target(kind, {}) == ("127.0.0.1", port)


def test_port_and_host_come_from_the_services_variables():
    env = {"SUPERNODE_DECODE__PORT": "50123", "SUPERNODE_RUNTIME__BIND_HOST": "0.0.0.0"}
    assert probe.target("decode", env) == ("127.0.0.1", 50123)
    assert probe.target("decode", {"SUPERNODE_RUNTIME__BIND_HOST": "10.1.2.3"})[0] == "10.1.2.3"
    with pytest.raises(ValueError, match="SUPERNODE_DECODE__PORT"):
        probe.target("decode", {"SUPERNODE_DECODE__PORT": "http"})
    with pytest.raises(ValueError, match="kind"):
        probe.target("gateway", {})


async def test_grpc_probe_follows_health_and_imports_no_grpc_runtime(host_factory):
    host = await host_factory(make_settings(), lambda server, drain: Fake(None, None))
    code, modules = await _probe_in_thread("fabric", SUPERNODE_FABRIC__PORT=str(host.port))
    assert code == 0
    heavy = [m for m in modules if m.startswith(HEAVY)]
    assert heavy == [], f"the probe imported {heavy}"
    await host.drain_and_stop()  # NOT_SERVING while draining, then gone
    code, _ = await _probe_in_thread("fabric", SUPERNODE_FABRIC__PORT=str(host.port))
    assert code == 1


async def test_http_probe_for_the_frontend():
    code, modules = await _probe_in_thread("frontend", SUPERNODE_FRONTEND__PORT=str(free_port()))
    assert code == 1 and not [m for m in modules if m.startswith(HEAVY)]


def test_bad_usage_exits_2():
    assert run_probe("gateway")[0] == 2


async def _probe_in_thread(kind: str, **env: str) -> tuple[int, list[str]]:
    return await asyncio.to_thread(run_probe, kind, **env)


async def test_status_agrees_with_grpcs_own_health_client(host_factory):
    host = await host_factory(make_settings(), lambda server, drain: Fake(None, None))
    statuses = {}
    for status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING):
        await host.health.set("", status)
        async with grpc.aio.insecure_channel(host.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        ours = await asyncio.to_thread(probe.health_status, "127.0.0.1", host.port, 5.0)
        statuses[status] = (reply.status, ours)
    assert all(theirs == ours for theirs, ours in statuses.values()), statuses


async def test_probe_passes_the_routers_token_check_and_fails_on_a_closed_port(host_factory):
    settings = make_settings()
    host = ServiceHost(settings, lambda server, drain: Fake(None, None), 0, token_interceptors("t0ken"))
    await host.start()
    assert await asyncio.to_thread(probe.check_grpc, "127.0.0.1", host.port, 5.0)
    await host.drain_and_stop()
    assert not await asyncio.to_thread(probe.check_grpc, "127.0.0.1", free_port(), 1.0)
