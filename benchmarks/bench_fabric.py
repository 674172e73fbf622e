"""Fabric scheduling throughput: transfers per second through `FlowNetwork` on the full supernode.

Setup: the 48-node topology, 1,000 flows always in flight. Each step advances emulated time to the next
event and replaces every finished transfer with a new one, so each transfer costs one add (route lookup,
max-min recompute) and one completion (recompute of the flows it leaves room for). Traffic: 70% UB
die->die reads between random dies, 20% EMS loads (CPU DRAM -> die over UB), 10% RDMA die->die; sizes
are 1-64 KV blocks of 128 tokens of DeepSeek-R1 MLA (70,272 B per token). Seeded, so runs are comparable.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from benchmarks import fabric_heatmap
from supernode.core.flows import FlowNetwork
from supernode.core.topology import Endpoint, Plane, Route, Topology

NUM_CONCURRENT = 1_000
NUM_TRANSFERS = 20_000
BLOCK_BYTES = 128 * 70_272


def _random_route(topology: Topology, rng: random.Random) -> Route:
    dst = Endpoint("die", rng.randrange(topology.num_dies))
    draw = rng.random()
    if draw < 0.2:
        return topology.route(Endpoint("cpu", rng.randrange(topology.num_cpus)), dst, Plane.UB)
    src = Endpoint("die", rng.randrange(topology.num_dies))
    while src == dst:
        src = Endpoint("die", rng.randrange(topology.num_dies))
    return topology.route(src, dst, Plane.RDMA if draw < 0.3 else Plane.UB)


def _start(net: FlowNetwork, topology: Topology, rng: random.Random, flow_id: int, now_s: float) -> None:
    route = _random_route(topology, rng)
    num_bytes = rng.randint(1, 64) * BLOCK_BYTES
    net.add(
        flow_id, route.links, num_bytes, now_s, rate_cap=route.rate_cap_bytes_per_s, latency_s=route.latency_s
    )


def run(num_transfers: int = NUM_TRANSFERS, num_concurrent: int = NUM_CONCURRENT) -> dict[str, float]:
    """Schedules `num_transfers` transfers, `num_concurrent` in flight; returns transfers per wall second."""
    topology = Topology()
    net = FlowNetwork(topology.capacities())
    rng = random.Random(0)
    for flow_id in range(num_concurrent):
        _start(net, topology, rng, flow_id, 0.0)
    next_id, completed = num_concurrent, 0
    started = time.perf_counter()
    while completed < num_transfers:
        now_s = net.next_event_s()
        assert now_s is not None, "flows in flight always have a next event"
        for _ in net.advance(now_s):
            completed += 1
            _start(net, topology, rng, next_id, now_s)
            next_id += 1
    elapsed_s = time.perf_counter() - started
    figures = {"fabric_transfers_per_s": round(completed / elapsed_s, 1)}
    figures["fabric_rpc_ms_p50"] = asyncio.run(_rpc_p50_ms())
    labels, rows = fabric_heatmap.simulate()
    fabric_heatmap.write_png(Path("reports/fabric_heatmap.png"), labels, rows)
    return figures


async def _rpc_p50_ms(num_calls: int = 500) -> float:
    """Median wall time of one small Transfer RPC to an in-process fabric over loopback (ms)."""
    from supernode.fabric.service import build
    from supernode.runtime.channels import open_channel
    from supernode.runtime.config import Settings
    from supernode.runtime.server import ServiceHost
    from supernode.v1 import fabric_pb2, fabric_pb2_grpc

    settings = Settings.model_validate({"runtime": {"time_scale": 1000.0}, "fabric": {"metrics_port": 0}})
    host = ServiceHost(settings, build(settings), 0)
    await host.start()
    request = fabric_pb2.TransferRequest(
        src=fabric_pb2.Endpoint(kind=fabric_pb2.ENDPOINT_KIND_CPU, index=3),
        dst=fabric_pb2.Endpoint(kind=fabric_pb2.ENDPOINT_KIND_DIE, index=40),
        num_bytes=BLOCK_BYTES,
        plane=fabric_pb2.PLANE_UB,
    )
    times = []
    async with open_channel(host.address, settings) as channel:
        stub = fabric_pb2_grpc.FabricStub(channel)
        for _ in range(num_calls):
            started = time.perf_counter()
            await stub.Transfer(request)
            times.append((time.perf_counter() - started) * 1e3)
    await host.drain_and_stop()
    return round(statistics.median(times), 3)


if __name__ == "__main__":
    print(json.dumps(run()))
