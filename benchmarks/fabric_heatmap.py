"""A CloudMatrix-Infer traffic pattern on the fabric model, and a PNG heat map of link utilisation.

The paper's deployment ([v3] §5.1): 6 prefill instances on 12 nodes, one decode instance on 20 nodes,
the EMS pool on the CPUs of all 32. Prefill dies load cached prefixes from CPU DRAM over UB; decode
dies pull each finished prompt's KV from a prefill die over RDMA. Utilisation per node (its dies' UB
receive ports and its RDMA receive ports) is sampled over emulated time.
"""

from __future__ import annotations

import random
from pathlib import Path

from supernode.core.flows import FlowNetwork
from supernode.core.topology import Endpoint, Plane, Topology

KV_BYTES_PER_TOKEN = 70_272
NUM_PREFILL_NODES, NUM_DECODE_NODES = 12, 20
DIES_PER_NODE = 16


def simulate(
    duration_s: float = 2.0, step_s: float = 0.02, seed: int = 0
) -> tuple[list[str], list[list[float]]]:
    """Rows: node labels; columns: time steps; values: the node's receive ports' mean utilisation."""
    topology = Topology()
    net = FlowNetwork(topology.capacities())
    rng = random.Random(seed)
    prefill_dies = range(NUM_PREFILL_NODES * DIES_PER_NODE)
    decode_dies = range(
        NUM_PREFILL_NODES * DIES_PER_NODE, (NUM_PREFILL_NODES + NUM_DECODE_NODES) * DIES_PER_NODE
    )
    pool_cpus = range((NUM_PREFILL_NODES + NUM_DECODE_NODES) * 4)
    nodes = list(range(NUM_PREFILL_NODES + NUM_DECODE_NODES))
    rows: list[list[float]] = [[] for _ in nodes]
    ports = {
        node: [
            p
            for d in range(node * DIES_PER_NODE, (node + 1) * DIES_PER_NODE)
            for p in (f"ub/die{d}/rx", f"rdma/die{d}/rx")
            if p in topology.links
        ]
        for node in nodes
    }
    carried = {p: 0.0 for node in nodes for p in ports[node]}
    flow_id, now = 0, 0.0
    while now < duration_s:
        # Each step: ~40 cache loads (2-3K cached tokens) and ~30 P->D pulls (4K-token prompts).
        for _ in range(40):
            route = topology.route(
                Endpoint("cpu", rng.choice(pool_cpus)), Endpoint("die", rng.choice(prefill_dies)), Plane.UB
            )
            net.add(
                flow_id,
                route.links,
                rng.randint(16, 24) * 128 * KV_BYTES_PER_TOKEN,
                now,
                rate_cap=route.rate_cap_bytes_per_s,
                latency_s=route.latency_s,
            )
            flow_id += 1
        for _ in range(30):
            route = topology.route(
                Endpoint("die", rng.choice(prefill_dies)),
                Endpoint("die", rng.choice(decode_dies)),
                Plane.RDMA,
            )
            net.add(
                flow_id,
                route.links,
                4096 * KV_BYTES_PER_TOKEN,
                now,
                rate_cap=route.rate_cap_bytes_per_s,
                latency_s=route.latency_s,
            )
            flow_id += 1
        now += step_s
        net.advance(now)
        for node in nodes:
            # Mean utilisation over the step: bytes carried / (capacity x step), averaged over ports.
            total = 0.0
            for port in ports[node]:
                st = net.link_stats(port)
                total += (st.bytes_total - carried[port]) / (st.capacity_bytes_per_s * step_s)
                carried[port] = st.bytes_total
            rows[node].append(total / len(ports[node]))
    labels = [f"node {n} ({'prefill' if n < NUM_PREFILL_NODES else 'decode'})" for n in nodes]
    return labels, rows


def write_png(path: Path, labels: list[str], rows: list[list[float]], step_s: float = 0.02) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = max(max(row) for row in rows) or 1.0
    fig, ax = plt.subplots(figsize=(10, 7))
    image = ax.imshow(
        rows,
        aspect="auto",
        cmap="viridis",
        vmin=0,
        vmax=peak,
        interpolation="nearest",
        extent=(0, len(rows[0]) * step_s * 1e3, len(rows) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("emulated time (ms)")
    ax.set_title("UB + RDMA receive-port utilisation per node (prefill: EMS loads; decode: P->D pulls)")
    fig.colorbar(image, ax=ax, label=f"mean utilisation of the node's die receive ports (peak {peak:.1%})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
