"""The checks `make compose-test` runs against the stack in Docker, from the host (see compose_test.py)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supernode.sdk import Client, DeadlineExceededError, UnauthenticatedError

SERVING = ["redis", "fabric", "kvpool", "prefill-0", "prefill-1", "decode-0", "router", "frontend"]
SERVICES = [*SERVING, "prometheus"]  # Grafana has no Debian package: the registry-free run leaves it out
UP_TIMEOUT_S = 150.0
Result = tuple[bool, str]
Record = Callable[[str, Callable[[], Result]], bool]


class Stack:
    """The compose project: commands against it and requests to its published ports."""

    def __init__(self, root: Path, env: dict[str, str], ports: dict[str, int], token: str) -> None:
        self.root, self.env, self.ports, self.token = root, env, ports, token
        self.is_up = False
        self._ids: dict[str, str] = {}

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = ("docker-compose", "--profile", "observability", *args)
        return subprocess.run(
            cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def container(self, service: str) -> str:
        """The service's container id ('' before it exists; a restart by policy keeps the same one)."""
        if not self._ids.get(service):
            project = self.env["COMPOSE_PROJECT_NAME"]
            found = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", f"label=com.docker.compose.service={service}"],
                capture_output=True, text=True,
            )  # fmt: skip
            self._ids[service] = found.stdout.strip()
        return self._ids[service]

    def inspect(self, service: str, fmt: str) -> str:
        out = subprocess.run(
            ["docker", "inspect", "-f", fmt, self.container(service)], capture_output=True, text=True
        )
        return out.stdout.strip()

    def exec(self, service: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        full = ["docker", "exec", self.container(service), *cmd]
        return subprocess.run(full, capture_output=True, text=True, timeout=30)

    def http(self, path: str, body: dict[str, Any] | None = None, port: str = "http") -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.ports[port]}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text.startswith(("{", "[")) else text
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()[:300]

    def generate(self, *, token: str) -> subprocess.CompletedProcess[str]:
        cli = str(self.root / ".venv" / "bin" / "supernode")
        cmd = [
            cli,
            "generate",
            "The supernode",
            "--max-tokens",
            "16",
            "--router",
            f"127.0.0.1:{self.ports['grpc']}",
        ]
        return subprocess.run([*cmd, "--token", token], capture_output=True, text=True, timeout=60)

    def wait_healthy(self, services: list[str], timeout_s: float) -> dict[str, float]:
        """Polls until every service's container is healthy: seconds from now until each was (inf: never).

        Runs while `up` is still creating containers (a service without a container is not healthy yet).
        """
        start = time.monotonic()
        seen = dict.fromkeys(services, float("inf"))
        while time.monotonic() < start + timeout_s and float("inf") in seen.values():
            for name in [n for n, t in seen.items() if t == float("inf")]:
                if self.container(name) and self.inspect(name, "{{.State.Health.Status}}") == "healthy":
                    seen[name] = time.monotonic() - start
            time.sleep(0.3)
        return seen

    def logs_tail(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "15").stdout[-6000:]


def completion(prompt: str, max_tokens: int) -> dict[str, Any]:
    """A /v1/completions body that returns exactly max_tokens tokens."""
    return {"model": "deepseek-r1", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}


def check_up(stack: Stack) -> Result:
    stack.is_up = True
    up = subprocess.Popen(
        ["docker-compose", "--profile", "observability", "up", "-d", "--no-build", *SERVICES],
        cwd=stack.root, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    healthy = stack.wait_healthy(SERVING, UP_TIMEOUT_S)
    _, errors = up.communicate(timeout=60)
    pending = [s for s, t in healthy.items() if t == float("inf")]
    order = ", ".join(f"{s} {t:.0f}" for s, t in sorted(healthy.items(), key=lambda kv: kv[1]))
    if up.returncode != 0:
        return False, f"docker-compose up: exit {up.returncode}: {errors[-400:]}"
    return not pending, f"healthy after (s): {order}" + (f"; not healthy: {pending}" if pending else "")


def check_health(stack: Stack) -> Result:
    status, body = stack.http("/health")
    return status == 200, f"GET /health -> {status} {str(body)[:80]}"


def check_completion(stack: Stack) -> Result:
    body = completion("The supernode", 16)
    status, reply = stack.http("/v1/completions", body)
    ok = status == 200 and reply["usage"]["completion_tokens"] == 16 and bool(reply["choices"][0]["text"])
    return ok, f"POST /v1/completions -> {status}, usage {reply['usage'] if status == 200 else reply}"


def check_chat(stack: Stack) -> Result:
    body = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
    status, reply = stack.http("/v1/chat/completions", body)
    ok = status == 200 and reply["usage"]["completion_tokens"] > 0
    return ok, f"POST /v1/chat/completions -> {status}, usage {reply['usage'] if status == 200 else reply}"


def check_generate(stack: Stack) -> Result:
    allowed = stack.generate(token=stack.token)
    ok = allowed.returncode == 0 and "output tokens" in allowed.stdout
    with Client(f"127.0.0.1:{stack.ports['grpc']}", token="wrong-token", timeout_s=30) as client:
        try:
            client.complete("The supernode", max_tokens=4)
            denied = "answered"
        except UnauthenticatedError:
            denied = "UNAUTHENTICATED"
    last = allowed.stdout.strip().splitlines()[-1:] or [allowed.stderr[-200:]]
    return (
        ok and denied == "UNAUTHENTICATED",
        f"with token: exit {allowed.returncode} ({last[0]}); wrong token: {denied}",
    )


def check_worker_metrics(stack: Stack) -> Result:
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9170/metrics').read().decode())"
    out = stack.exec("decode-0", "python", "-c", fetch)
    names = {line.split("{")[0].split(" ")[0] for line in out.stdout.splitlines() if line and line[0] != "#"}
    wanted = [n for n in names if n.startswith(("supernode_decode", "vllm:"))]
    return out.returncode == 0 and bool(wanted), f"decode-0 :9170/metrics: {len(names)} series names"


def check_kill9(stack: Stack) -> Result:
    """kill -9 of prefill-1's service process inside its container; restart policy, then requests succeed."""
    restarts = int(stack.inspect("prefill-1", "{{.RestartCount}}") or 0)
    killed = stack.exec("prefill-1", "sh", "-c", "kill -9 $(cat /proc/1/task/1/children)")
    if killed.returncode != 0:
        return False, f"kill failed: {killed.stderr[-200:]}"
    t0 = time.monotonic()
    deadline, during = t0 + 60, {"ok": 0, "failed": 0}
    while (
        time.monotonic() < deadline and int(stack.inspect("prefill-1", "{{.RestartCount}}") or 0) == restarts
    ):
        time.sleep(0.1)
    restarted_s = time.monotonic() - t0
    while time.monotonic() < deadline and stack.inspect("prefill-1", "{{.State.Health.Status}}") != "healthy":
        status, _ = stack.http("/v1/completions", completion("during", 4))
        during["ok" if status == 200 else "failed"] += 1
        time.sleep(0.2)
    healthy_s = time.monotonic() - t0
    results = [stack.http("/v1/completions", completion(f"after {i}", 4))[0] for i in range(12)]
    ok = restarted_s < 60 and healthy_s < 60 and all(s == 200 for s in results)
    return ok, (
        f"restarted after {restarted_s:.1f} s, healthy after {healthy_s:.1f} s; requests while it was "
        f"down: {during}; after: {results.count(200)}/12 ok"
    )


def check_prometheus_targets(stack: Stack) -> Result:
    deadline = time.monotonic() + 30
    while True:
        status, reply = stack.http("/api/v1/targets", port="prometheus")
        targets = reply["data"]["activeTargets"] if status == 200 else []
        down = [f"{t['labels']['job']}:{t['labels']['instance']}" for t in targets if t["health"] != "up"]
        if (targets and not down) or time.monotonic() > deadline:
            return bool(targets) and not down, f"{len(targets) - len(down)}/{len(targets)} up; down: {down}"
        time.sleep(1)


def dashboard_metrics(root: Path) -> set[str]:
    text = (root / "infra" / "grafana" / "dashboards" / "supernode.json").read_text()
    exprs = [p.get("expr", "") for p in _walk(json.loads(text))]
    return {m for e in exprs for m in re.findall(r"\b(vllm:[a-z0-9_:]+|supernode_[a-z0-9_]+)", e)}


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *[x for v in node.values() for x in _walk(v)]]
    if isinstance(node, list):
        return [x for v in node for x in _walk(v)]
    return []


def check_dashboard_metrics(stack: Stack) -> Result:
    wanted = dashboard_metrics(stack.root)
    for i in range(16):  # a short load (one request over its deadline, as real loads have), then scrapes
        stack.http("/v1/completions", completion(f"load {i} " * 40, 8))
    with Client(f"127.0.0.1:{stack.ports['grpc']}", token=stack.token, timeout_s=30) as client:
        with contextlib.suppress(DeadlineExceededError):
            client.complete("late", max_tokens=64, deadline_s=0.001)
    deadline, missing = time.monotonic() + 20, sorted(wanted)
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        status, reply = stack.http("/api/v1/label/__name__/values", port="prometheus")
        have = set(reply["data"]) if status == 200 else set()
        missing = sorted(wanted - have)
    return (
        not missing,
        f"{len(wanted) - len(missing)}/{len(wanted)} dashboard metrics in Prometheus; missing {missing}",
    )


def check_down_drain(stack: Stack) -> Result:
    """`docker-compose down` while a streaming request is in flight: it completes, every container exits 0."""
    project = stack.env["COMPOSE_PROJECT_NAME"]
    events = subprocess.Popen(
        ["docker", "events", "--filter", f"label=com.docker.compose.project={project}",
         "--filter", "event=die", "--format", "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    outcome: dict[str, Any] = {}
    first_token = threading.Event()
    body = {**completion("Drain me", 300), "stream": True}

    def stream() -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{stack.ports['http']}/v1/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                for line in resp:
                    first_token.set()
                    if b'"finish_reason":"length"' in line.replace(b" ", b""):
                        outcome["finished"] = time.monotonic()
        except Exception as err:
            outcome["error"] = f"{type(err).__name__}: {err}"
        first_token.set()

    client = threading.Thread(target=stream, daemon=True)
    client.start()
    first_token.wait(30)
    down_at = time.monotonic()
    down = stack.compose("down", "--remove-orphans", timeout=180)
    stack.is_up = down.returncode != 0
    client.join(10)
    time.sleep(1)
    events.terminate()
    exits = dict(line.split(" ", 1) for line in events.communicate(timeout=5)[0].splitlines() if " " in line)
    nonzero = {name: code for name, code in exits.items() if code != "0"}
    finished = outcome.get("finished", 0.0) > down_at  # still streaming when down began
    ok = down.returncode == 0 and finished and len(exits) >= len(SERVICES) and not nonzero
    streamed = f"completed {outcome['finished'] - down_at:.1f} s into down" if finished else str(outcome)
    return ok, f"request in flight {streamed}; {len(exits)} containers exited, non-zero: {nonzero or 'none'}"


def run_checks(stack: Stack, record: Record) -> None:
    if not record("up-healthy", lambda: check_up(stack)):
        return
    record("http-health", lambda: check_health(stack))
    record("http-completions", lambda: check_completion(stack))
    record("http-chat", lambda: check_chat(stack))
    record("grpc-generate-token", lambda: check_generate(stack))
    record("worker-metrics", lambda: check_worker_metrics(stack))
    record("kill9-restart", lambda: check_kill9(stack))
    record("prometheus-targets", lambda: check_prometheus_targets(stack))
    record("dashboard-metrics", lambda: check_dashboard_metrics(stack))
    record("down-drain", lambda: check_down_drain(stack))
