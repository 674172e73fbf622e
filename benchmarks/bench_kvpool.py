"""KV pool throughput on one Redis against a 3-master Redis Cluster, and payload bandwidth against raw gRPC.

Setup, all on 127.0.0.1 in one run: a standalone redis-server and a Redis Cluster of 3 masters (no
replicas: this measures placement, not replication), each behind kvpool services run as processes
(`python -m supernode.kvpool`). A client in this process keeps `CONCURRENCY` calls in flight, spread
round-robin over the services, each round a `Put` of `BATCH` fresh blocks then a `Get` of them with
payloads. Blocks are 128 tokens with 4 KiB payloads.

- kvpool_blocks_per_s_standalone: blocks stored and read back per second (one block = one Put + one
  Get), one Redis behind one pool service (the default deployment).
- kvpool_blocks_per_s_standalone_svc3: the same, one Redis behind three pool services.
- kvpool_blocks_per_s_cluster3: the same, 3 masters behind three pool services (the scaled-out pool).
- kvpool_payload_mb_per_s: payload bytes per second that `Get` returns at full block size
  (payload ratio 1.0, about 9 MB a block, 4 blocks a call), digest check included.
- grpc_unary_copy_mb_per_s: a raw gRPC unary call returning the same bytes from a process that
  holds them in memory (no Redis, no protobuf message, no digest): what the payload figure is held to.
- kvpool_cluster3_over_standalone, kvpool_payload_over_grpc_copy: the two ratios the targets name;
  kvpool_bench_load_average: the host's 1-minute load average at the end (the machine is shared).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from supernode.core import blocks
from supernode.hw.specs import KV_BYTES_PER_TOKEN
from supernode.kvpool.local_cluster import LocalRedisCluster, free_cluster_port
from supernode.launcher import free_port, spawn_redis, terminate
from supernode.runtime.channels import open_channel, wait_serving
from supernode.runtime.config import Settings
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc

BLOCK_TOKENS = 128
PAYLOAD_BYTES = 4096
SMALL_RATIO = PAYLOAD_BYTES / (BLOCK_TOKENS * KV_BYTES_PER_TOKEN)
BATCH = 256
CONCURRENCY = 6
DURATION_S = 6.0
FULL_BLOCKS_PER_CALL = 4
FULL_CALLS = 12
_tokens = itertools.count(1000)


def fresh_blocks(n: int) -> list[kvpool_pb2.Block]:
    """n blocks no store has seen (distinct first tokens make distinct prefix-chained keys)."""
    out = []
    for _ in range(n):
        tokens = [next(_tokens) % 120_000 + 300, *range(400, 400 + BLOCK_TOKENS - 1)]
        out.append(kvpool_pb2.Block(key=blocks.block_keys(tokens, BLOCK_TOKENS)[0], tokens=tokens))
    return out


@contextmanager
def pool_services(
    redis_url: str, num: int, ratio: float, log_dir: Path, profile_to: Path | None = None
) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """`num` pool service processes on `redis_url`; yields their addresses and processes.
    `profile_to`: run them under cProfile, writing the (last one's) profile there at exit."""
    profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to is not None else []
    ports = [free_port() for _ in range(num)]
    procs = []
    for port in ports:
        env = os.environ | {
            "SUPERNODE_KVPOOL__PORT": str(port),
            "SUPERNODE_KVPOOL__METRICS_PORT": "0",
            "SUPERNODE_KVPOOL__REDIS_URL": redis_url,
            "SUPERNODE_KVPOOL__BLOCK_TOKENS": str(BLOCK_TOKENS),
            "SUPERNODE_KVPOOL__PAYLOAD_RATIO": repr(ratio),
            "SUPERNODE_RUNTIME__LOG_LEVEL": "WARNING",
        }
        log = open(log_dir / f"kvpool-{port}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, *profile, "-m", "supernode.kvpool"], env=env, stdout=log, stderr=log
            )
        )
    addresses = [f"127.0.0.1:{p}" for p in ports]
    try:
        for address in addresses:
            asyncio.run(wait_serving(address, Settings(), 60))
        yield addresses, procs
    finally:
        for proc in procs:
            terminate(proc, 10)


async def _blocks_per_s(addresses: list[str]) -> float:
    channels = [open_channel(a, Settings()) for a in addresses]
    stubs = [kvpool_pb2_grpc.KvPoolStub(c) for c in channels]
    turn = itertools.count()
    done = 0

    async def worker(deadline: float) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            stub = stubs[next(turn) % len(stubs)]
            batch = fresh_blocks(BATCH)
            put = await stub.Put(kvpool_pb2.PutRequest(blocks=batch), timeout=60)
            got = await stub.Get(
                kvpool_pb2.GetRequest(block_keys=[b.key for b in batch], with_payload=True), timeout=60
            )
            if put.num_stored != BATCH or len(got.blocks) != BATCH:
                raise RuntimeError(f"lost blocks: stored {put.num_stored}, read {len(got.blocks)}")
            done += BATCH

    await asyncio.gather(*(worker(time.monotonic() + 1.0) for _ in range(CONCURRENCY)))  # warm-up
    done = 0
    started = time.monotonic()
    await asyncio.gather(*(worker(started + DURATION_S) for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    for channel in channels:
        await channel.close()
    return done / elapsed


async def _payload_mb_per_s(address: str) -> float:
    async with open_channel(address, Settings()) as channel:
        stub = kvpool_pb2_grpc.KvPoolStub(channel)
        batch = fresh_blocks(FULL_BLOCKS_PER_CALL)
        await stub.Put(kvpool_pb2.PutRequest(blocks=batch), timeout=300)
        request = kvpool_pb2.GetRequest(block_keys=[b.key for b in batch], with_payload=True)
        await stub.Get(request, timeout=60)
        num_bytes = 0
        started = time.monotonic()
        for _ in range(FULL_CALLS):
            reply = await stub.Get(request, timeout=60)
            num_bytes += sum(len(b.payload) for b in reply.blocks)
        return num_bytes / (time.monotonic() - started) / 1e6


def _full_call_bytes() -> int:
    size = blocks.payload_size(BLOCK_TOKENS, KV_BYTES_PER_TOKEN, 1.0)
    return FULL_BLOCKS_PER_CALL * size


async def _raw_copy_mb_per_s(address: str) -> float:
    async with open_channel(address, Settings()) as channel:
        call = channel.unary_unary("/bench.Copy/Get")
        await call(b"", timeout=60)
        num_bytes = 0
        started = time.monotonic()
        for _ in range(FULL_CALLS):
            num_bytes += len(await call(b"", timeout=60))
        return num_bytes / (time.monotonic() - started) / 1e6


async def _serve_copy(port: int, size: int) -> None:
    """A gRPC server whose one unary method returns `size` bytes it holds in memory."""
    data = os.urandom(size)
    handler = grpc.method_handlers_generic_handler(
        "bench.Copy", {"Get": grpc.unary_unary_rpc_method_handler(lambda req, ctx: data)}
    )
    limit = Settings().runtime.max_message_bytes
    server = grpc.aio.server(
        options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kvpool-") as tmp:
        workdir = Path(tmp)
        port = free_cluster_port()
        redis = spawn_redis(port, "2gb", tmp, workdir / "redis.log")
        cluster = LocalRedisCluster(3, 0, "1gb", workdir=workdir / "cluster")
        try:
            cluster.start()
            url = f"redis://127.0.0.1:{port}/0"
            with pool_services(url, 1, SMALL_RATIO, workdir) as (one, _):
                figures["kvpool_blocks_per_s_standalone"] = asyncio.run(_blocks_per_s(one))
            with pool_services(url, 3, SMALL_RATIO, workdir) as (three, _):
                figures["kvpool_blocks_per_s_standalone_svc3"] = asyncio.run(_blocks_per_s(three))
            with pool_services(cluster.url, 3, SMALL_RATIO, workdir) as (three, _):
                figures["kvpool_blocks_per_s_cluster3"] = asyncio.run(_blocks_per_s(three))
            with pool_services(url, 1, 1.0, workdir) as (full, _):
                figures["kvpool_payload_mb_per_s"] = asyncio.run(_payload_mb_per_s(full[0]))
        finally:
            cluster.stop()
            terminate(redis, 10)
        copy_port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_kvpool", "--copy-server", str(copy_port)]
        )
        try:
            asyncio.run(_wait_port(copy_port))
            figures["grpc_unary_copy_mb_per_s"] = asyncio.run(_raw_copy_mb_per_s(f"127.0.0.1:{copy_port}"))
        finally:
            terminate(server, 10)
    # The host is shared: the 1-minute load average says how contended the run was (2 cores here).
    figures["kvpool_bench_load_average"] = os.getloadavg()[0]
    figures["kvpool_cluster3_over_standalone"] = (
        figures["kvpool_blocks_per_s_cluster3"] / figures["kvpool_blocks_per_s_standalone"]
    )
    figures["kvpool_payload_over_grpc_copy"] = (
        figures["kvpool_payload_mb_per_s"] / figures["grpc_unary_copy_mb_per_s"]
    )
    return figures


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("copy server did not start")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--copy-server":
        asyncio.run(_serve_copy(int(sys.argv[2]), _full_call_bytes()))
    else:
        for name, value in run().items():
            print(f"{name} = {value:.6g}")
