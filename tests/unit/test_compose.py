"""docker-compose.yml against the real CLI and settings: what users run must match what we test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from supernode.cli import app
from supernode.launcher import SERVICES
from supernode.runtime.config import Settings, known_env_vars

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES_YML = COMPOSE["services"]
THIRD_PARTY = {"redis", "prometheus", "grafana"}
OURS = {name: svc for name, svc in SERVICES_YML.items() if name not in THIRD_PARTY}
CLI_COMMANDS = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}


def default_port(kind: str) -> int:
    settings = Settings()
    return getattr(settings, kind).port


def kind_of(svc: dict) -> str:
    return svc["command"][2]


def test_every_command_is_a_real_cli_entry():
    assert OURS, "compose defines our services"
    for name, svc in OURS.items():
        command = svc["command"]
        assert command[:2] == ["supernode", "serve"], name
        assert "serve" in CLI_COMMANDS
        assert kind_of(svc) in SERVICES, f"{name}: unknown service {kind_of(svc)}"
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "supernode", "health"] and "health" in CLI_COMMANDS, name


def test_healthchecks_probe_the_service_port():
    for name, svc in OURS.items():
        target = svc["healthcheck"]["test"][3]
        kind = kind_of(svc)
        expected = default_port(kind)
        assert target.endswith(f":{expected}"), f"{name} probes {target}, serves on {expected}"


def test_every_environment_variable_is_a_known_setting():
    known = known_env_vars()
    for name, svc in OURS.items():
        for key in svc.get("environment", {}):
            assert key in known, f"{name}: {key} is not a setting (see runtime/config.py)"


def test_only_the_front_doors_are_published_and_redis_is_not():
    assert "ports" not in SERVICES_YML["redis"]
    published = {name for name, svc in OURS.items() if svc.get("ports")}
    assert published <= {"router", "frontend"}
    assert "router" in published


def test_depends_on_points_at_healthy_services():
    for name, svc in SERVICES_YML.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES_YML, f"{name} depends on unknown {dep}"
            assert cond["condition"] in {"service_healthy", "service_started"}
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES_YML[dep], f"{dep} has no healthcheck"


def test_router_reaches_every_worker_on_its_port():
    env = SERVICES_YML["router"]["environment"]
    for role in ("prefill", "decode"):
        addresses = env[f"SUPERNODE_ROUTER__{role.upper()}_ADDRESSES"].split(",")
        workers = {n for n, svc in OURS.items() if kind_of(svc) == role}
        assert {a.split(":")[0] for a in addresses} == workers
        assert all(a.endswith(f":{default_port(role)}") for a in addresses)


def test_workers_reach_fabric_and_pool_by_service_name():
    for svc in OURS.values():
        env = svc["environment"]
        assert env["SUPERNODE_FABRIC__ADDRESS"] == f"fabric:{default_port('fabric')}"
        assert env["SUPERNODE_KVPOOL__ADDRESS"] == f"kvpool:{default_port('kvpool')}"
        assert env["SUPERNODE_RUNTIME__BIND_HOST"] == "0.0.0.0"
    assert SERVICES_YML["kvpool"]["environment"]["SUPERNODE_KVPOOL__REDIS_URL"].startswith("redis://redis:")


def test_dockerfile_installs_the_package_and_has_the_cli():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "pip install ." in dockerfile and "COPY services" in dockerfile
    for name, svc in OURS.items():
        assert svc["build"]["dockerfile"] == "infra/Dockerfile", name


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian) not installed")
def test_docker_compose_validates_the_file():
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
