"""A Redis Cluster as local processes: N masters with R replicas each, joined by `redis-cli --cluster create`.

`supernode up --redis-cluster N`, `make cluster`, the tests and the benchmark use it. Every node is a
`redis-server --cluster-enabled yes` on 127.0.0.1 with its own directory (nodes.conf survives a
restart, so a restarted node rejoins), memory only, an LRU cap of its own, and
`cluster-require-full-coverage no` so the other masters keep serving while one slot range fails over.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import redis

from supernode.processes import spawn_redis, terminate

NUM_SLOTS = 16384
BUS_PORT_OFFSET = 10000  # Redis Cluster's node-to-node bus listens on port + 10000


def free_cluster_port() -> int:
    """A port p with p and p + 10000 both free now (the client port and the cluster bus)."""
    for _ in range(200):
        port = random.randint(20000, 55535 - BUS_PORT_OFFSET)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass(slots=True)
class RedisNode:
    port: int
    workdir: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalRedisCluster:
    def __init__(
        self,
        num_masters: int = 3,
        num_replicas: int = 1,
        maxmemory: str = "512mb",
        node_timeout_ms: int = 1000,
        workdir: Path | None = None,
        avoid: Collection[int] = (),
    ) -> None:
        """`avoid`: ports the nodes must not take, for their clients or their cluster bus (a caller's
        own planned ports, bound later)."""
        if num_masters < 3:
            raise ValueError("num_masters: Redis Cluster needs at least 3 masters")
        if not 0 <= num_replicas <= 4:
            raise ValueError("num_replicas: must be between 0 and 4 per master")
        self.num_masters = num_masters
        self.num_replicas = num_replicas
        self.maxmemory = maxmemory
        self.node_timeout_ms = node_timeout_ms
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="supernode-cluster-"))
        count = num_masters * (1 + num_replicas)
        self.nodes = [RedisNode(p, self.workdir / str(p)) for p in _distinct_ports(count, avoid)]

    @property
    def url(self) -> str:
        """A seed URL (the first node); the client discovers the others."""
        return f"redis://{self.nodes[0].name}/0"

    @property
    def seed_urls(self) -> list[str]:
        return [f"redis://{n.name}/0" for n in self.nodes]

    def start(self, timeout_s: float = 60.0) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found: run `make setup` or `apt-get install -y redis-tools`")
        for node in self.nodes:
            self._spawn(node)
        create = [cli, "--cluster", "create", *(n.name for n in self.nodes)]
        create += ["--cluster-replicas", str(self.num_replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout[-2000:]}{done.stderr}")
        self.wait_ok(timeout_s)

    def _spawn(self, node: RedisNode) -> None:
        node.workdir.mkdir(parents=True, exist_ok=True)
        extra = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip
        node.popen = spawn_redis(
            node.port, self.maxmemory, str(node.workdir), node.workdir / "redis.log", extra
        )

    def kill(self, port: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Sends `sig` to the node on `port` (SIGKILL: the crash the failover tests inject)."""
        node = self.node(port)
        if node.popen is not None:
            node.popen.send_signal(sig)
            node.popen.wait(10)
            node.popen = None

    def restart(self, port: int) -> None:
        """Starts the node on `port` again; its nodes.conf makes it rejoin (as a replica if replaced)."""
        self._spawn(self.node(port))

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def live_nodes(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.popen is not None and n.popen.poll() is None]

    def masters(self) -> list[int]:
        """Ports of the nodes that serve slots now, as a live node sees it."""
        lines = self._ask_any("CLUSTER", "NODES").splitlines()
        return sorted(
            int(f[1].split("@")[0].rsplit(":", 1)[1])
            for f in (line.split() for line in lines)
            if "master" in f[2] and "fail" not in f[2] and len(f) > 8
        )

    def wait_ok(self, timeout_s: float = 60.0) -> None:
        """Waits until every live node sees all 16,384 slots served and every replica is in sync."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._is_node_ok(n) for n in self.live_nodes()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis cluster not ok after {timeout_s:.0f} s; logs under {self.workdir}")

    def _is_node_ok(self, node: RedisNode) -> bool:
        try:
            with redis.Redis(port=node.port, socket_timeout=1.0, decode_responses=True) as client:
                info = client.cluster("INFO")
                replication = client.info("replication")
                table = str(client.execute_command("CLUSTER", "NODES"))
        except redis.RedisError:
            return False
        if int(info.get("cluster_slots_ok", 0)) != NUM_SLOTS:
            return False
        if replication.get("role") != "master" and replication.get("master_link_status") != "up":
            return False
        # Every live node known to this one, linked, and with no failure flag: what clients will see.
        seen = {}
        for fields in (line.split() for line in table.splitlines()):
            if len(fields) >= 8:
                seen[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = (fields[2], fields[7])
        for live in self.live_nodes():
            flags, link = seen.get(live.port, ("fail", "disconnected"))
            if link != "connected" or any(f in flags for f in ("fail", "handshake", "noaddr")):
                return False
        return True

    def _ask_any(self, *command: str) -> str:
        for node in self.live_nodes():
            try:
                with redis.Redis(port=node.port, socket_timeout=1.0, decode_responses=True) as client:
                    return str(client.execute_command(*command))
            except redis.RedisError:
                continue
        raise RuntimeError("no redis cluster node answers")

    def stop(self) -> None:
        for node in self.nodes:
            if node.popen is not None:
                terminate(node.popen, 5.0)
                node.popen = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _distinct_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    ports: list[int] = []
    taken = set(avoid)
    while len(ports) < count:
        port = free_cluster_port()
        clashes = any(abs(port - p) in (0, BUS_PORT_OFFSET) for p in ports)
        if not clashes and port not in taken and port + BUS_PORT_OFFSET not in taken:
            ports.append(port)
    return ports
