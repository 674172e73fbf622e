"""The local topology as processes: redis-server and every service, started in dependency order.

`supernode up`, `make run`, the end-to-end tests and the benchmarks all use `LocalStack`; it is the
same topology docker-compose.yml describes, on one machine's loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from supernode.processes import free_ports, spawn_redis, terminate
from supernode.runtime.channels import wait_serving
from supernode.runtime.config import Settings

if TYPE_CHECKING:
    from supernode.kvpool.local_cluster import LocalRedisCluster

SERVICES = ("fabric", "kvpool", "prefill", "decode", "router", "frontend")


@dataclass(slots=True)
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    address: str
    log_path: Path


@dataclass
class StackConfig:
    num_prefill: int = 2
    num_decode: int = 1
    with_frontend: bool = False
    ephemeral_ports: bool = False  # tests: every port picked free
    redis_url: str = ""  # use this Redis instead of starting one
    redis_cluster: int = 0  # > 0: start a Redis Cluster of this many masters instead of one redis-server
    redis_replicas: int = 1  # replicas per cluster master
    num_kvpool: int = 1  # stateless pool services; workers get the list
    env: dict[str, str] = field(default_factory=dict)  # extra SUPERNODE_* settings for every service
    log_dir: Path | None = None


class LocalStack:
    def __init__(self, config: StackConfig | None = None, settings: Settings | None = None) -> None:
        self.config = config or StackConfig()
        self.settings = settings or Settings()
        self.procs: list[Proc] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_cluster: LocalRedisCluster | None = None
        self.redis_url = self.config.redis_url
        self.log_dir = self.config.log_dir or Path(tempfile.mkdtemp(prefix="supernode-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._redis_dir: str | None = None
        self.ports = self._plan_ports()

    # -- planning

    def _plan_ports(self) -> dict[str, int]:
        s = self.settings
        defaults = {
            "fabric": s.fabric.port,
            "kvpool": s.kvpool.port,
            **{f"kvpool-{i}": s.kvpool.port + i for i in range(1, self.config.num_kvpool)},
            "router": s.router.port,
            "frontend": s.frontend.port,
            **{f"prefill-{i}": s.prefill.port + i for i in range(self.config.num_prefill)},
            **{f"decode-{i}": s.decode.port + i for i in range(self.config.num_decode)},
        }
        # Redis is internal (only the kvpool talks to it), so any free port will do; picked together,
        # the free ports are distinct.
        picked = iter(free_ports(1 + (len(defaults) if self.config.ephemeral_ports else 0)))
        ports = {"redis": next(picked)}
        for name, default in defaults.items():
            ports[name] = next(picked) if self.config.ephemeral_ports else default
        return ports

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    @property
    def kvpool_names(self) -> list[str]:
        return ["kvpool", *(f"kvpool-{i}" for i in range(1, self.config.num_kvpool))]

    @property
    def router_address(self) -> str:
        return self.address("router")

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERNODE_")}
        env.update({k: v for k, v in os.environ.items() if k.startswith("SUPERNODE_")})
        env.update(
            {
                "SUPERNODE_FABRIC__ADDRESS": self.address("fabric"),
                "SUPERNODE_KVPOOL__ADDRESS": self.address("kvpool"),
                "SUPERNODE_KVPOOL__ADDRESSES": ",".join(self.address(n) for n in self.kvpool_names),
                "SUPERNODE_KVPOOL__REDIS_URL": self.redis_url,
                "SUPERNODE_ROUTER__ADDRESS": self.router_address,
                "SUPERNODE_ROUTER__PREFILL_ADDRESSES": ",".join(
                    self.address(f"prefill-{i}") for i in range(self.config.num_prefill)
                ),
                "SUPERNODE_ROUTER__DECODE_ADDRESSES": ",".join(
                    self.address(f"decode-{i}") for i in range(self.config.num_decode)
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.config.ephemeral_ports:
            for key in ("FABRIC", "KVPOOL", "PREFILL", "DECODE", "ROUTER"):
                env[f"SUPERNODE_{key}__METRICS_PORT"] = "0"
        env.update(self.config.env)
        return env

    # -- lifecycle

    async def start(self, timeout_s: float = 60.0) -> None:
        if not self.redis_url and self.config.redis_cluster:
            await asyncio.to_thread(self._start_redis_cluster, timeout_s)
        elif not self.redis_url:
            self._start_redis()
        self._spawn("fabric", "fabric", {"SUPERNODE_FABRIC__PORT": str(self.ports["fabric"])})
        for i, name in enumerate(self.kvpool_names):
            self._spawn(name, "kvpool", self._kvpool_env(name, i))
        await self._wait(["fabric", *self.kvpool_names], timeout_s)
        workers = []
        for i in range(self.config.num_prefill):
            name = f"prefill-{i}"
            self._spawn(name, "prefill", self._worker_env("PREFILL", name, i))
            workers.append(name)
        for i in range(self.config.num_decode):
            name = f"decode-{i}"
            self._spawn(name, "decode", self._worker_env("DECODE", name, i))
            workers.append(name)
        await self._wait(workers, timeout_s)
        self._spawn("router", "router", {"SUPERNODE_ROUTER__PORT": str(self.ports["router"])})
        await self._wait(["router"], timeout_s)
        if self.config.with_frontend:
            self._spawn("frontend", "frontend", {"SUPERNODE_FRONTEND__PORT": str(self.ports["frontend"])})
            await self._wait_http(self.ports["frontend"], timeout_s)

    def stop_redis(self) -> None:
        """Stops the local redis-server (fault injection: the pool loses its store and its data)."""
        if self.redis is not None:
            terminate(self.redis, 5.0)
            self.redis = None

    def start_redis(self) -> None:
        """(Re)starts the local redis-server on its port, empty."""
        self._start_redis()

    def _worker_env(self, section: str, name: str, index: int) -> dict[str, str]:
        """Port, worker id and (with fixed ports) a metrics port of its own for the index-th instance."""
        env = {f"SUPERNODE_{section}__PORT": str(self.ports[name]), f"SUPERNODE_{section}__WORKER_ID": name}
        if not self.config.ephemeral_ports:
            base = getattr(self.settings, section.lower()).metrics_port
            env[f"SUPERNODE_{section}__METRICS_PORT"] = str(base + index) if base else "0"
        return env

    def _kvpool_env(self, name: str, index: int) -> dict[str, str]:
        env = {"SUPERNODE_KVPOOL__PORT": str(self.ports[name])}
        if index and not self.config.ephemeral_ports:
            base = self.settings.kvpool.metrics_port
            env["SUPERNODE_KVPOOL__METRICS_PORT"] = str(base + index) if base else "0"
        return env

    def _start_redis_cluster(self, timeout_s: float) -> None:
        from supernode.kvpool.local_cluster import LocalRedisCluster  # imports redis-py: only when asked

        self.redis_cluster = LocalRedisCluster(
            self.config.redis_cluster,
            self.config.redis_replicas,
            self.settings.kvpool.redis_maxmemory,
            workdir=self.log_dir / "redis-cluster",
            avoid=self.ports.values(),  # a node's cluster bus (port + 10000) must not take a service's port
        )
        try:
            self.redis_cluster.start(timeout_s)
        except BaseException:
            self.redis_cluster.stop()
            raise
        self.redis_url = ",".join(self.redis_cluster.seed_urls)  # any live node lets a pool service start

    def _start_redis(self) -> None:
        self._redis_dir = tempfile.mkdtemp(prefix="supernode-redis-")
        port = self.ports["redis"]
        self.redis = spawn_redis(
            port, self.settings.kvpool.redis_maxmemory, self._redis_dir, self.log_dir / "redis.log"
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def _spawn(self, name: str, module: str, extra: dict[str, str]) -> None:
        env = self.base_env()
        env.update(extra)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115
        popen = subprocess.Popen(
            [sys.executable, "-m", f"supernode.{module}"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(Proc(name, popen, self.address(name), log_path))

    async def _wait(self, names: list[str], timeout_s: float) -> None:
        async def one(name: str) -> None:
            proc = self.proc(name)
            try:
                await wait_serving(proc.address, self.settings, timeout_s)
            except TimeoutError as err:
                raise RuntimeError(
                    f"{name} did not become healthy; log: {proc.log_path}\n{self.tail(name)}"
                ) from err

        await asyncio.gather(*(one(n) for n in names))

    async def _wait_http(self, port: int, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health", timeout=1.0)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"frontend did not become healthy; log: {self.log_dir / 'frontend.log'}")

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order, waiting for each; returns exit codes."""
        codes: dict[str, int | None] = {}
        for proc in reversed(self.procs):
            codes[proc.name] = terminate(proc.popen, timeout_s)
        self.procs.clear()
        if self.redis is not None:
            terminate(self.redis, 5.0)
            self.redis = None
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
            self.redis_cluster = None
        if self._redis_dir:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
        return codes
