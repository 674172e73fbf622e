"""docker-compose.yml against the real CLI and settings: what users run must match what we test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from supernode.cli import app
from supernode.launcher import SERVICES
from supernode.probe import DEFAULT_PORTS
from supernode.runtime.config import Settings, known_env_vars

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES_YML = COMPOSE["services"]
# Ours are built from infra/Dockerfile; the rest (redis and the cluster profile's redis nodes,
# prometheus, grafana) are third-party images.
OURS = {name: svc for name, svc in SERVICES_YML.items() if "build" in svc}
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


def test_healthchecks_run_the_light_probe_for_the_services_own_kind():
    # The probe reads the port from the same SUPERNODE_<KIND>__PORT the service reads, so it follows
    # a changed port instead of hard-coding the default.
    for name, svc in OURS.items():
        test = svc["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", "supernode.probe", kind_of(svc)], name
        assert kind_of(svc) in DEFAULT_PORTS and DEFAULT_PORTS[kind_of(svc)] == default_port(kind_of(svc))


def test_healthcheck_intervals_are_staggered_and_bounded():
    intervals = [svc["healthcheck"]["interval"] for svc in SERVICES_YML.values() if "healthcheck" in svc]
    assert len(set(intervals)) >= 4, f"checks fire together: {intervals}"
    for name, svc in SERVICES_YML.items():
        if "healthcheck" in svc:
            check = svc["healthcheck"]
            assert check["timeout"] and check["retries"] >= 3, name


def test_every_long_running_service_restarts_and_runs_under_an_init():
    for name, svc in SERVICES_YML.items():
        assert svc.get("restart") == "unless-stopped", name
    for name, svc in {**OURS, "redis": SERVICES_YML["redis"]}.items():
        assert svc.get("init") is True, f"{name}: PID 1 must forward SIGTERM and let kill -9 end the service"


def test_every_environment_variable_is_a_known_setting():
    known = known_env_vars()
    for name, svc in OURS.items():
        for key in svc.get("environment", {}):
            assert key in known, f"{name}: {key} is not a setting (see runtime/config.py)"


def test_only_the_front_doors_are_published_and_only_on_loopback_by_default():
    assert "ports" not in SERVICES_YML["redis"]
    published = {name for name, svc in OURS.items() if svc.get("ports")}
    assert published == {"router", "frontend"}
    for name, svc in SERVICES_YML.items():
        for mapping in svc.get("ports", []):
            assert mapping.startswith("${SUPERNODE_PUBLISH_HOST:-127.0.0.1}:"), f"{name}: {mapping}"


def test_internal_services_sit_on_the_internal_network_only():
    networks = COMPOSE["networks"]
    assert networks["internal"]["internal"] is True
    for name, svc in SERVICES_YML.items():
        joined = set(svc["networks"])
        assert "internal" in joined, name
        if not svc.get("ports"):
            assert joined == {"internal"}, f"{name} is on {joined} but publishes nothing"


def test_redis_requires_a_password_that_the_pool_sends():
    redis = SERVICES_YML["redis"]
    command = redis["command"]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${SUPERNODE_REDIS_PASSWORD")
    url = SERVICES_YML["kvpool"]["environment"]["SUPERNODE_KVPOOL__REDIS_URL"]
    assert url.startswith(f"redis://:{password}@redis:")
    assert redis["environment"]["REDISCLI_AUTH"] == password


def test_router_token_is_required_by_the_router_and_sent_by_the_frontend():
    for name in ("router", "frontend"):
        env = SERVICES_YML[name]["environment"]
        assert env["SUPERNODE_ROUTER__AUTH_TOKEN"] == "${SUPERNODE_ROUTER_TOKEN:-}", name


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
    assert "@redis:6379/" in SERVICES_YML["kvpool"]["environment"]["SUPERNODE_KVPOOL__REDIS_URL"]


def test_dockerfile_installs_the_package_at_locked_versions_from_a_chosen_base():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
    assert "-c /tmp/deps/constraints.txt" in dockerfile and "COPY services" in dockerfile
    assert "rm -rf /tmp/src" in dockerfile, "the build tree must not stay in the image"
    for name, svc in OURS.items():
        assert svc["build"]["dockerfile"] == "infra/Dockerfile", name
        assert svc["build"]["args"]["BASE_IMAGE"] == "${SUPERNODE_BASE_IMAGE:-python:3.11-slim}", name


def test_constraints_pin_every_dependency_exactly():
    lines = [
        ln for ln in (ROOT / "infra" / "constraints.txt").read_text().splitlines() if ln and ln[0] != "#"
    ]
    assert lines and all("==" in ln for ln in lines), [ln for ln in lines if "==" not in ln]
    pinned = {ln.split("==")[0].lower().replace("_", "-") for ln in lines}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *[d for extra in project["optional-dependencies"].values() for d in extra],
    ]
    for requirement in wanted:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not in infra/constraints.txt: run `make lock`"


def test_build_context_is_an_allowlist():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"]
    for needed in ("!pyproject.toml", "!README.md", "!protos/", "!services/", "!infra/constraints.txt"):
        assert needed in ignore


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian) not installed")
def test_docker_compose_validates_the_file():
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_compose_test_passes_with_a_message_where_there_is_no_docker(tmp_path):
    # PATH without docker or docker-compose: the target must say so and exit 0, never fail CI there.
    python = Path(sys.executable)
    result = subprocess.run(
        [str(python), str(ROOT / "infra" / "compose_test.py")],
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "compose-test: skipped: docker is not installed" in result.stdout
    assert not (tmp_path / "reports").exists()
