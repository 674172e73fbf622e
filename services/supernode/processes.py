"""Local processes: free ports, redis-server, stopping a child, and what CPU a process has used.

The launcher (`LocalStack`), the local Redis Cluster, the tests and the benchmarks start and stop
their processes with these.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each stays bound until all are picked, so none comes back twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def terminate(popen: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    if popen.poll() is not None:
        return popen.returncode
    popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
        return None


# redis-server's jemalloc returns a freed multi-MB reply buffer to the kernel at once (MADV_DONTNEED,
# whatever `dirty_decay_ms` > 0 says), so the next large GET page-faults its whole reply in again:
# ~0.8 of Redis's 1.3 ms of CPU per MB sent for 9 MB blocks. Keeping freed pages (the heap stays at
# its peak: about `maxmemory` plus the largest replies in flight) sends them at ~0.5 ms per MB.
# A MALLOC_CONF already in the environment wins; Redis builds with their own jemalloc prefix ignore it.
REDIS_MALLOC_CONF = "dirty_decay_ms:-1"


def spawn_redis(
    port: int, maxmemory: str, workdir: str, log_path: Path, extra_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Starts a private redis-server on 127.0.0.1:port: memory only, LRU under `maxmemory`; waits for it.

    `extra_args` go on the command line as they are (cluster mode: `--cluster-enabled yes ...`); the
    server's allocator keeps freed memory (`REDIS_MALLOC_CONF`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run `make setup` or `apt-get install -y redis-server`")
    cmd = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru", "--dir", workdir,
        "--protected-mode", "yes", *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        env = {"MALLOC_CONF": REDIS_MALLOC_CONF} | os.environ
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {log_path}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start within 10 s")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
