"""KV pool throughput on one Redis against a 3-master Redis Cluster, and payload bandwidth against raw gRPC.

Setup, all on 127.0.0.1 in one run: a standalone redis-server and a Redis Cluster of 3 masters (no
replicas: this measures placement, not replication), each behind kvpool services run as processes
(`python -m supernode.kvpool`). A client in this process keeps `CONCURRENCY` calls in flight, spread
round-robin over the services, each round a `Put` of `BATCH` fresh blocks then a `Get` of them with
payloads. Blocks are 128 tokens with 4 KiB payloads. One block = one Put + one Get.

The pool service is stateless and deployed several at a time (`kvpool.addresses`), so the scaled-out
pool is measured as it runs: 3 masters behind `NUM_SERVICES` pool services. For a fair ratio the
standalone Redis sits behind the same number of services; only the Redis side differs.

- kvpool_blocks_per_s_standalone: blocks per second, 1 Redis behind NUM_SERVICES pool services.
- kvpool_blocks_per_s_cluster3: the same, 3 masters behind NUM_SERVICES pool services.
- kvpool_blocks_per_s_standalone_svc1: the same, 1 Redis behind 1 pool service (the default deployment).
- kvpool_{service,redis,client}_cpu_us_per_block_{standalone,cluster3}: CPU microseconds per block
  spent by the pool services, the Redis servers and the load generator (from /proc: unlike the
  wall-clock figures they hold on a shared machine, and they say which side bounds the throughput).
- kvpool_payload_mb_per_s: payload bytes per second the pool returns at full block size (payload
  ratio 1.0, about 9 MB a block, 4 blocks a call), digest check included, read with the streamed
  `GetStream` (one message per 9 MB block; the service reads block k+1 from Redis while it sends
  block k). kvpool_payload_unary_mb_per_s: the same blocks through the unary `Get` (one 36 MB reply).
- grpc_unary_copy_mb_per_s: a raw gRPC unary call returning the same bytes from a process that
  holds them in memory (no Redis, no digest, the reply serialized once at start-up, the same allocator
  setting as the pool service). The bytes are a `GetResponse` of
  as many blocks of the same size, and the client decodes every reply alike
  (`GetResponse.FromString`, then each payload's length), so the ratio compares the servers, not the
  clients' work. grpc_stream_copy_mb_per_s: the same copy server streaming the same blocks as
  `GetStream` does, one `GetResponse` message per block (decoding 9 MB messages costs the client
  less per MB than one 36 MB message, so this is the like-for-like baseline of the streamed figure).
- kvpool_payload_server_cpu_ms_per_mb, grpc_unary_copy_server_cpu_ms_per_mb,
  grpc_stream_copy_server_cpu_ms_per_mb: server-side CPU per MB (pool service + Redis, streamed;
  the copy server); kvpool_payload_service_cpu_ms_per_mb / kvpool_payload_redis_cpu_ms_per_mb: the
  pool service's and Redis's parts; kvpool_payload_unary_service_cpu_ms_per_mb /
  kvpool_payload_unary_redis_cpu_ms_per_mb: the same for the unary `Get`.
  The four full-size reads (pool and copy, streamed and unary) take turns call by call
  (benchmarks/kvpool_payload.py), so the ratios below compare reads under the same load.
- kvpool_cluster3_over_standalone, kvpool_payload_over_grpc_copy: the two ratios the targets name;
  the latter is the streamed pool over the faster of the two raw copies (in practice the streamed
  one: the unary copy alone would credit the pool with the client's cheaper decoding of smaller
  messages). kvpool_payload_over_grpc_stream_copy (streamed / streamed) and
  kvpool_payload_unary_over_grpc_copy (unary / unary) compare like with like;
  kvpool_bench_load_average: the host's 1-minute load average at the end (the machine is shared).

The Redis servers are started by `supernode.processes.spawn_redis`, with its allocator setting
(`REDIS_MALLOC_CONF`: freed reply buffers are kept, not page-faulted in again), over TCP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.kvpool_setup import BLOCK_TOKENS, fresh_blocks, pool_services
from supernode.hw.specs import KV_BYTES_PER_TOKEN
from supernode.kvpool.local_cluster import LocalRedisCluster, free_cluster_port
from supernode.processes import cpu_s, spawn_redis, terminate
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc

PAYLOAD_BYTES = 4096
SMALL_RATIO = PAYLOAD_BYTES / (BLOCK_TOKENS * KV_BYTES_PER_TOKEN)
BATCH = 256
CONCURRENCY = 6
NUM_SERVICES = 3  # pool services in front of the standalone Redis and of the cluster alike
DURATION_S = 6.0


@dataclass
class Throughput:
    blocks_per_s: float
    service_cpu_us_per_block: float  # the pool services' CPU, summed
    redis_cpu_us_per_block: float  # the Redis servers' CPU, summed
    client_cpu_us_per_block: float  # this process (the load generator)


def _throughput(addresses: list[str], services: list[int], redis: list[int]) -> Throughput:
    """Runs the Put + Get load on `addresses`, and meters the CPU the processes spend on it."""
    return asyncio.run(_blocks_per_s(addresses, services, redis))


async def _blocks_per_s(addresses: list[str], services: list[int], redis: list[int]) -> Throughput:
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
    service_before, redis_before = sum(map(cpu_s, services)), sum(map(cpu_s, redis))
    client_before, started = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(started + DURATION_S) for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    us = 1e6 / max(done, 1)
    meter = Throughput(
        blocks_per_s=done / elapsed,
        service_cpu_us_per_block=(sum(map(cpu_s, services)) - service_before) * us,
        redis_cpu_us_per_block=(sum(map(cpu_s, redis)) - redis_before) * us,
        client_cpu_us_per_block=(time.process_time() - client_before) * us,
    )
    for channel in channels:
        await channel.close()
    return meter


def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kvpool-") as tmp:
        workdir = Path(tmp)
        port = free_cluster_port()
        redis = spawn_redis(port, "2gb", tmp, workdir / "redis.log")
        cluster = LocalRedisCluster(3, 0, "1gb", workdir=workdir / "cluster")
        try:
            cluster.start()
            cluster_pids = [n.popen.pid for n in cluster.nodes if n.popen is not None]
            url = f"redis://127.0.0.1:{port}/0"
            runs = {
                "standalone_svc1": (url, 1, [redis.pid]),
                "standalone": (url, NUM_SERVICES, [redis.pid]),
                "cluster3": (cluster.url, NUM_SERVICES, cluster_pids),
            }
            for name, (redis_url, num, redis_pids) in runs.items():
                with pool_services(redis_url, num, SMALL_RATIO, workdir) as (addresses, procs):
                    meter = _throughput(addresses, [p.pid for p in procs], redis_pids)
                figures[f"kvpool_blocks_per_s_{name}"] = meter.blocks_per_s
                if name != "standalone_svc1":
                    figures[f"kvpool_service_cpu_us_per_block_{name}"] = meter.service_cpu_us_per_block
                    figures[f"kvpool_redis_cpu_us_per_block_{name}"] = meter.redis_cpu_us_per_block
                    figures[f"kvpool_client_cpu_us_per_block_{name}"] = meter.client_cpu_us_per_block
            from benchmarks.kvpool_payload import payload_figures  # it imports this module's helpers

            figures.update(payload_figures(url, redis.pid, workdir))
        finally:
            cluster.stop()
            terminate(redis, 10)
    # The host is shared: the 1-minute load average says how contended the run was (2 cores here).
    figures["kvpool_bench_load_average"] = os.getloadavg()[0]
    figures["kvpool_cluster3_over_standalone"] = (
        figures["kvpool_blocks_per_s_cluster3"] / figures["kvpool_blocks_per_s_standalone"]
    )
    streamed, unary = figures["kvpool_payload_mb_per_s"], figures["kvpool_payload_unary_mb_per_s"]
    # Held to the faster raw copy: the client decodes 9 MB messages for less CPU per MB than one 36 MB
    # message, so the streamed pool against the unary copy alone would credit the pool with that.
    best_copy = max(figures["grpc_unary_copy_mb_per_s"], figures["grpc_stream_copy_mb_per_s"])
    figures["kvpool_payload_over_grpc_copy"] = streamed / best_copy
    figures["kvpool_payload_over_grpc_stream_copy"] = streamed / figures["grpc_stream_copy_mb_per_s"]
    figures["kvpool_payload_unary_over_grpc_copy"] = unary / figures["grpc_unary_copy_mb_per_s"]
    return figures


if __name__ == "__main__":
    # Run as the module kvpool_payload imports, not as __main__: one block counter, so the full-size
    # blocks are never the keys the throughput runs stored at 4 KiB.
    from benchmarks import bench_kvpool

    for name, value in bench_kvpool.run().items():
        print(f"{name} = {value:.6g}")
