"""`make compose-test`: build the images, run the stack with docker-compose as users do, check it.

The stack runs as its own compose project on its own networks; the host reaches it only through the
published ports on 127.0.0.1 (free ports picked here) and `docker exec`. Writes reports/compose.json
(rows: check, ok, seconds, detail) and exits 1 when any check fails; exits 0 with a message when this
machine has no Docker engine. Base images: the official ones when they are already present locally,
else the registry-free ones infra/base-image.sh builds from Debian packages (reused when present).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compose_checks import Stack, run_checks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "supernode-ct"
OFFICIAL = ("python:3.11-slim", "redis:7-alpine", "prom/prometheus:v2.53.0")
REGISTRY_FREE = ("supernode-base:bookworm", "supernode-redis:bookworm", "supernode-prometheus:bookworm")


def sh(
    *cmd: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def docker_missing() -> str:
    """Why this machine cannot run the test ('' when it can)."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    info = sh("docker", "info", "--format", "{{.ServerVersion}}", timeout=20)
    return "" if info.returncode == 0 else "no Docker engine is running (dockerd)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(rows: list[dict[str, object]], check: str, fn: object) -> bool:
    """Runs fn() -> (ok, detail), appends its row, returns ok."""
    start = time.monotonic()
    try:
        ok, detail = fn()  # type: ignore[operator]
    except Exception as err:  # a check that breaks is a failed check, with the reason in the report
        ok, detail = False, f"{type(err).__name__}: {err}"
    rows.append(
        {"check": check, "ok": bool(ok), "seconds": round(time.monotonic() - start, 1), "detail": detail}
    )
    mark = "ok  " if ok else "FAIL"
    print(f"compose-test: {mark} {check:<22} {rows[-1]['seconds']:>6} s  {detail}", flush=True)
    return bool(ok)


def base_images() -> tuple[tuple[str, str, str], bool]:
    have_official = all(sh("docker", "image", "inspect", name).returncode == 0 for name in OFFICIAL)
    return (OFFICIAL, False) if have_official else (REGISTRY_FREE, True)


def build(images: tuple[str, str, str], registry_free: bool) -> tuple[bool, str]:
    if registry_free:
        made = sh("bash", "infra/base-image.sh", timeout=900)
        if made.returncode != 0:
            return False, "infra/base-image.sh: " + (made.stderr or made.stdout)[-400:]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    out = sh(
        "docker", "build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={images[0]}",
        "-f", "infra/Dockerfile", "-t", "supernode:latest", ".", env=env, timeout=900,
    )  # fmt: skip
    if out.returncode != 0:
        return False, out.stderr[-600:]
    size = sh("docker", "image", "inspect", "-f", "{{.Size}}", "supernode:latest").stdout.strip()
    return True, f"supernode:latest on {images[0]}, {int(size) / 1e6:.0f} MB"


def main() -> int:
    missing = docker_missing()
    if missing:
        print(f"compose-test: skipped: {missing}; nothing to test here (make test does not need Docker)")
        return 0
    images, registry_free = base_images()
    ports = {name: free_port() for name in ("http", "grpc", "prometheus", "grafana")}
    token, password = secrets.token_hex(16), secrets.token_hex(16)
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "SUPERNODE_BASE_IMAGE": images[0],
        "SUPERNODE_REDIS_IMAGE": images[1],
        "SUPERNODE_PROMETHEUS_IMAGE": images[2],
        "SUPERNODE_ROUTER_TOKEN": token,
        "SUPERNODE_REDIS_PASSWORD": password,
        "SUPERNODE_HTTP_PORT": str(ports["http"]),
        "SUPERNODE_GRPC_PORT": str(ports["grpc"]),
        "SUPERNODE_PROMETHEUS_PORT": str(ports["prometheus"]),
        "SUPERNODE_GRAFANA_PORT": str(ports["grafana"]),
    }
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    stack = Stack(ROOT, env, ports, token)
    sh("docker-compose", "--profile", "observability", "down", "-v", "--remove-orphans", env=env)
    try:
        if timed(rows, "build", lambda: build(images, registry_free)):
            run_checks(stack, lambda check, fn: timed(rows, check, fn))
    finally:
        if stack.is_up:
            print(stack.logs_tail(), file=sys.stderr) if not all(r["ok"] for r in rows) else None
            sh("docker-compose", "--profile", "observability", "down", "-v", "--remove-orphans", env=env)
    total = round(time.monotonic() - started, 1)
    report = ROOT / "reports" / "compose.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps(rows, indent=2) + "\n")
    failed = [r["check"] for r in rows if not r["ok"]]
    print(f"compose-test: {total} s in all, rows in {report.relative_to(ROOT)}; failed: {failed or 'none'}")
    print(f"compose-test: {len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
