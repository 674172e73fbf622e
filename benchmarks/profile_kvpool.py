"""CPU cost per block of the KV pool, process by process: `python -m benchmarks.profile_kvpool`.

Wall-clock throughput on a shared machine says little; CPU time does. This runs a real Redis (one
standalone server or a 3-master cluster) and one pool service process, sends `--rounds` batched
Put + Get calls of `--batch` fresh blocks (one block = one Put + one Get with payload), and prints the
CPU microseconds each process spent per block: the pool service, the Redis server(s) and this client.
With `--profile` the service runs under cProfile and its top functions are printed.

    python -m benchmarks.profile_kvpool --mode cluster3 --profile
    python -m benchmarks.profile_kvpool --full        # full-size payloads (payload ratio 1.0)
    python -m benchmarks.profile_kvpool --full --stream --concurrency 1   # the same read with GetStream
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import tempfile
import time
from pathlib import Path

from benchmarks.bench_kvpool import SMALL_RATIO
from benchmarks.kvpool_setup import BLOCK_TOKENS, fresh_blocks, pool_services
from supernode.kvpool.local_cluster import LocalRedisCluster, free_cluster_port
from supernode.processes import cpu_s, spawn_redis, terminate
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc


async def _rounds(address: str, rounds: int, batch: int, concurrency: int, stream: bool = False) -> int:
    async with open_channel(address, Settings()) as channel:
        stub = kvpool_pb2_grpc.KvPoolStub(channel)

        async def one() -> int:
            blocks = fresh_blocks(batch)
            put = await stub.Put(kvpool_pb2.PutRequest(blocks=blocks), timeout=300)
            request = kvpool_pb2.GetRequest(block_keys=[b.key for b in blocks], with_payload=True)
            if stream:
                replies = [reply async for reply in stub.GetStream(request, timeout=300)]
            else:
                replies = [await stub.Get(request, timeout=300)]
            num_read = sum(len(reply.blocks) for reply in replies)
            if put.num_stored != batch or num_read != batch:
                raise RuntimeError(f"lost blocks: stored {put.num_stored}, read {num_read}")
            return batch

        done = 0
        for _ in range(rounds // concurrency):
            done += sum(await asyncio.gather(*(one() for _ in range(concurrency))))
        return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["standalone", "cluster3"], default="standalone")
    parser.add_argument("--full", action="store_true", help="full-size payloads (ratio 1.0)")
    parser.add_argument("--rounds", type=int, default=0, help="Put+Get calls (default: 60, full: 8)")
    parser.add_argument("--batch", type=int, default=0, help="blocks per call (default: 256, full: 4)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="run the service under cProfile")
    parser.add_argument("--stream", action="store_true", help="read with GetStream instead of Get")
    args = parser.parse_args()
    rounds = args.rounds or (8 if args.full else 60)
    batch = args.batch or (4 if args.full else 256)
    ratio = 1.0 if args.full else SMALL_RATIO
    with tempfile.TemporaryDirectory(prefix="profile-kvpool-") as tmp:
        workdir = Path(tmp)
        prof = workdir / "kvpool.prof" if args.profile else None
        redis_procs, cluster = [], None
        if args.mode == "standalone":
            port = free_cluster_port()
            redis_procs = [spawn_redis(port, "2gb", tmp, workdir / "redis.log")]
            url = f"redis://127.0.0.1:{port}/0"
        else:
            cluster = LocalRedisCluster(3, 0, "1gb", workdir=workdir / "cluster")
            cluster.start()
            redis_procs = [n.popen for n in cluster.nodes if n.popen is not None]
            url = cluster.url
        try:
            with pool_services(url, 1, ratio, workdir, profile_to=prof) as (addresses, services):
                asyncio.run(_rounds(addresses[0], args.concurrency, batch, args.concurrency))  # warm-up
                pids = {"service": [services[0].pid], "redis": [p.pid for p in redis_procs]}
                before = {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}
                client_before, started = time.process_time(), time.monotonic()
                num_blocks = asyncio.run(_rounds(addresses[0], rounds, batch, args.concurrency, args.stream))
                elapsed = time.monotonic() - started
                client = time.process_time() - client_before
                after = {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}
        finally:
            if cluster is not None:
                cluster.stop()
            for proc in redis_procs if cluster is None else []:
                terminate(proc, 10)
        size = "full-size" if args.full else "4 KiB"
        print(f"{args.mode}, {size} payloads: {num_blocks} blocks of {BLOCK_TOKENS} tokens, {elapsed:.2f} s")
        print(f"  (wall clock; load average {os.getloadavg()[0]:.1f}: the machine may be shared)")
        for name in pids:
            print(f"  {name:8s} CPU {(after[name] - before[name]) / num_blocks * 1e6:9.1f} us/block")
        print(f"  {'client':8s} CPU {client / num_blocks * 1e6:9.1f} us/block")
        if prof is not None and prof.exists():
            stats = pstats.Stats(str(prof))
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats("kvpool|redis", 30)


if __name__ == "__main__":
    main()
