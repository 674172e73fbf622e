"""The CloudMatrix384 supernode as directed links with capacities, and routes on the UB, RDMA and VPC planes.

Pure: no I/O, no clock. Units: bytes/s and seconds; GB = 1e9 bytes (the paper's 7 x 224 Gbit/s = 196 GB/s
is decimal). "ref" below is /work/shared/reference/cloudmatrix-infer.md.

Indices: global die = (node * 8 + npu) * 2 + die (0..767 at 48 nodes); global NPU = node * 8 + npu;
global CPU = node * 4 + cpu (0..191). An endpoint is ("die", index) or ("cpu", index).

Links (one direction each; ids are plain strings, usable as metric labels):

| id                                | what                                                      | capacity  |
|-----------------------------------|-----------------------------------------------------------|-----------|
| ub/die{d}/tx, ub/die{d}/rx        | a die's UB port: 7 links x 28 GB/s, one to each L1 chip   | 196 GB/s  |
| ub/cpu{c}/tx, ub/cpu{c}/rx        | a Kunpeng socket's UB port (EMS DRAM pool)                | 160 GB/s  |
| ub/node{n}/up, ub/node{n}/down    | the node's 7 L1 chips x 16 links x 28 GB/s to the L2 tier | 3136 GB/s |
| d2d/npu{p}/0to1, d2d/npu{p}/1to0  | cross-die link inside one NPU package                     | 270 GB/s  |
| rdma/die{d}/tx, rdma/die{d}/rx    | a die's RoCE port                                         | 25 GB/s   |
| vpc/node{n}/tx, vpc/node{n}/rx    | the node's Qingtian card                                  | 50 GB/s   |

Why ports and not single wires: every UB transfer is sprayed evenly over a die's 7 links (one per L1
chip, so over all 7 sub-planes) and over the 16 L2 chips of each sub-plane (ASSUMPTION: the paper gives
no routing policy; even spraying is what a non-blocking Clos needs to deliver its full bandwidth). Under
even spraying the 7 wires of a port always carry the same set of flows, each 1/7 of every flow, so they
bind exactly as one link of 7x the capacity; likewise a node's 7 x 16 L1->L2 wires, and the L2 chips,
which are non-blocking crossbars (ref 1.2 "Oversubscription: none"). A fault on one L1 chip or sub-plane
is expressed by degrading the node's up/down link by 1/7 per lost chip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from supernode.hw import calibration as cal

# --- Counts (ref 1.2) ---
DEFAULT_NUM_NODES = 48  # ref 1.2 "Supernode: 384 NPUs ... 48 nodes"
NPUS_PER_NODE = 8  # ref 1.2 "Node: 8 NPUs + 4 Kunpeng CPUs + 7 on-board L1 UB switch chips"
DIES_PER_NPU = 2  # ref 1.1 "2 identical compute dies"
DIES_PER_NODE = NPUS_PER_NODE * DIES_PER_NPU
CPUS_PER_NODE = 4  # ref 1.2 "Node"
L1_CHIPS_PER_NODE = 7  # ref 1.2 "7 on-board L1 UB switch chips"; chip i feeds sub-plane i
NUM_SUBPLANES = 7  # ref 1.2 "L2 UB fabric: 7 independent sub-planes x 16 L2 chips"
L2_CHIPS_PER_SUBPLANE = 16  # ref 1.2 "L2 UB fabric"

GB = 1e9  # bytes; decimal, as in ref 1.1 (7 x 224 Gbit/s = 196 GB/s)
GBIT = 1e9 / 8  # bytes per Gbit
US = 1e-6  # seconds

# --- Capacities, bytes/s, one direction ---
# The die's UB port, its RDMA port and the RDMA latency are hw/calibration.py's figures (one source).
UB_DIE_PORT_BYTES_PER_S = cal.ASCEND_UB_LINK_BYTES_PER_S.value  # 196 GB/s: ref 1.1 "7 x 224 Gbps"
UB_WIRE_BYTES_PER_S = UB_DIE_PORT_BYTES_PER_S / L1_CHIPS_PER_NODE  # 28 GB/s: ref 1.2 "16 links x 28 GB/s"
UB_CPU_PORT_BYTES_PER_S = cal.UB_CPU_PORT_BYTES_PER_S.value  # ref 1.2 "~160 GB/s per CPU socket"
L1_UPLINK_BYTES_PER_S = L2_CHIPS_PER_SUBPLANE * UB_WIRE_BYTES_PER_S  # 448 GB/s per L1 chip: ref 1.2
UB_NODE_UPLINK_BYTES_PER_S = (
    L1_CHIPS_PER_NODE * L1_UPLINK_BYTES_PER_S
)  # 3136 GB/s: ref 1.2 "Oversubscription"
D2D_BYTES_PER_S = 270 * GB  # ref 1.1 "Die-to-die link 270 GB/s per direction"
RDMA_DIE_PORT_BYTES_PER_S = cal.ASCEND_RDMA_BYTES_PER_S.value  # 25 GB/s: ref 1.1 "RoCE 200 Gbps" per die
VPC_NODE_PORT_BYTES_PER_S = 400 * GBIT  # 50 GB/s: ref 1.2 "VPC plane ... 400 Gbps per node"

# --- Fixed per-message latencies ---
RDMA_LATENCY_S = cal.RDMA_LATENCY_US.value * US  # an ASSUMPTION there: the paper reports none
# ASSUMPTION: the paper reports no VPC latency; 30 us is typical of one-way TCP/IP through a cloud DPU.
VPC_LATENCY_S = 30 * US


class Plane(StrEnum):
    """Network planes (ref 1.2)."""

    UB = "ub"  # Unified Bus: NPU<->NPU and NPU<->CPU DRAM inside the supernode
    RDMA = "rdma"  # RoCE between NPU dies (prefill->decode KV)
    VPC = "vpc"  # Ethernet through the node's Qingtian card


class Op(StrEnum):
    """Who drives a UB transfer: READ = the destination pulls, WRITE = the source pushes (ref 1.3)."""

    READ = "read"
    WRITE = "write"


EndpointKind = Literal["die", "cpu"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: EndpointKind  # "die" (an NPU die) or "cpu" (a Kunpeng socket and its DRAM)
    index: int  # global die index (0..num_dies-1) or global CPU index (0..num_cpus-1)


@dataclass(frozen=True, slots=True)
class PathPerf:
    bandwidth_bytes_per_s: float  # what one transfer alone on an idle path achieves (bytes/s)
    latency_s: float  # fixed per-message cost (s), the 512-byte latency


def _perf(gb_per_s: float, latency_us: float) -> PathPerf:
    return PathPerf(gb_per_s * GB, latency_us / 1e6)


def _sourced(bandwidth: cal.Sourced[float], latency_us: cal.Sourced[float]) -> PathPerf:
    return PathPerf(bandwidth.value, latency_us.value / 1e6)


# ref 1.3 ([v2] Table 1, per die, unidirectional): (path, op, is_inter_node) -> measured figure; the
# figures hw/calibration.py also uses are read from there.
# NPU-CPU READ = the NPU reads CPU DRAM (data CPU -> NPU); WRITE = the NPU writes CPU DRAM.
UB_MEASURED: dict[tuple[str, Op, bool], PathPerf] = {
    ("npu-npu", Op.READ, True): _sourced(cal.UB_READ_NPU_INTER_BYTES_PER_S, cal.UB_READ_NPU_INTER_LATENCY_US),
    ("npu-npu", Op.READ, False): _perf(167, 1.2),
    ("npu-npu", Op.WRITE, True): _sourced(
        cal.UB_WRITE_NPU_INTER_BYTES_PER_S, cal.UB_WRITE_NPU_INTER_LATENCY_US
    ),
    ("npu-npu", Op.WRITE, False): _perf(137, 1.3),
    ("npu-cpu", Op.READ, True): _sourced(cal.UB_READ_CPU_INTER_BYTES_PER_S, cal.UB_READ_CPU_INTER_LATENCY_US),
    ("npu-cpu", Op.READ, False): _perf(151, 1.0),
    ("npu-cpu", Op.WRITE, True): _perf(107, 1.9),
    ("npu-cpu", Op.WRITE, False): _perf(110, 1.1),
}


class RouteError(ValueError):
    """A transfer the topology cannot carry (bad endpoint, plane or op); `field` names the request field."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Link:
    link_id: str  # e.g. "ub/die17/tx"
    plane: Plane  # plane the link belongs to (d2d counts as UB)
    node: int  # node the link belongs to
    capacity_bytes_per_s: float  # nominal capacity, one direction (bytes/s)


@dataclass(frozen=True, slots=True)
class Route:
    plane: Plane  # plane carrying the transfer
    op: Op | None  # READ or WRITE on UB; None on RDMA and VPC
    links: tuple[str, ...]  # link ids crossed, source side first
    rate_cap_bytes_per_s: float | None  # per-transfer cap from the measured table (None = ports only)
    latency_s: float  # fixed per-message latency (s)
    is_inter_node: bool  # True when the endpoints are on different nodes


class Topology:
    """The link graph of a supernode of `num_nodes` nodes (default 48) and its routing rules."""

    def __init__(self, num_nodes: int = DEFAULT_NUM_NODES) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes: must be >= 1, got {num_nodes}")
        self.num_nodes = num_nodes
        self.num_npus = num_nodes * NPUS_PER_NODE
        self.num_dies = num_nodes * DIES_PER_NODE
        self.num_cpus = num_nodes * CPUS_PER_NODE
        self.links: dict[str, Link] = {}
        self._by_node: list[list[str]] = [[] for _ in range(num_nodes)]
        for node in range(num_nodes):
            self._add_node(node)

    def _add(self, link_id: str, plane: Plane, node: int, capacity_bytes_per_s: float) -> None:
        self.links[link_id] = Link(link_id, plane, node, capacity_bytes_per_s)
        self._by_node[node].append(link_id)

    def _add_node(self, node: int) -> None:
        for suffix in ("up", "down"):
            self._add(f"ub/node{node}/{suffix}", Plane.UB, node, UB_NODE_UPLINK_BYTES_PER_S)
        for suffix in ("tx", "rx"):
            self._add(f"vpc/node{node}/{suffix}", Plane.VPC, node, VPC_NODE_PORT_BYTES_PER_S)
        for die in range(node * DIES_PER_NODE, (node + 1) * DIES_PER_NODE):
            for suffix in ("tx", "rx"):
                self._add(f"ub/die{die}/{suffix}", Plane.UB, node, UB_DIE_PORT_BYTES_PER_S)
                self._add(rdma_port(die, suffix), Plane.RDMA, node, RDMA_DIE_PORT_BYTES_PER_S)
        for npu in range(node * NPUS_PER_NODE, (node + 1) * NPUS_PER_NODE):
            for suffix in ("0to1", "1to0"):
                self._add(f"d2d/npu{npu}/{suffix}", Plane.UB, node, D2D_BYTES_PER_S)
        for cpu in range(node * CPUS_PER_NODE, (node + 1) * CPUS_PER_NODE):
            for suffix in ("tx", "rx"):
                self._add(f"ub/cpu{cpu}/{suffix}", Plane.UB, node, UB_CPU_PORT_BYTES_PER_S)

    def capacities(self) -> dict[str, float]:
        """Nominal capacity of every link (bytes/s), the input of `FlowNetwork`."""
        return {link_id: link.capacity_bytes_per_s for link_id, link in self.links.items()}

    def links_of_node(self, node: int) -> tuple[str, ...]:
        """Every link of a node (its dies', NPUs', CPUs' and L1 chips' ports): what a node outage downs."""
        if not 0 <= node < self.num_nodes:
            raise RouteError(f"node must be in 0..{self.num_nodes - 1}, got {node}", field="node")
        return tuple(self._by_node[node])

    def node_of(self, endpoint: Endpoint) -> int:
        """The node an endpoint sits on; raises RouteError for an unknown kind or an index out of range."""
        if endpoint.kind == "die":
            limit, per_node = self.num_dies, DIES_PER_NODE
        elif endpoint.kind == "cpu":
            limit, per_node = self.num_cpus, CPUS_PER_NODE
        else:
            raise RouteError(f"kind must be 'die' or 'cpu', got {endpoint.kind!r}", field="kind")
        if not 0 <= endpoint.index < limit:
            raise RouteError(
                f"{endpoint.kind} index must be in 0..{limit - 1}, got {endpoint.index}", "index"
            )
        return endpoint.index // per_node

    def route(self, src: Endpoint, dst: Endpoint, plane: Plane, op: Op | None = None) -> Route:
        """The links, per-transfer cap and latency of moving bytes from `src` to `dst` on `plane`.

        `op` matters on UB only: for die<->die it defaults to READ (the destination pulls, as decode does);
        for die<->CPU it follows the direction (CPU->die is READ, die->CPU is WRITE) and a contradicting
        `op` is refused. Raises RouteError naming the offending field.
        """
        src_node = self._checked_node(src, "src")
        dst_node = self._checked_node(dst, "dst")
        if src == dst:
            raise RouteError("src and dst must differ", field="dst")
        if plane == Plane.UB:
            return self._ub_route(src, dst, src_node, dst_node, op)
        if op is not None:
            raise RouteError(f"op applies to the UB plane only, not {plane.value}", field="op")
        if plane == Plane.RDMA:
            return self._rdma_route(src, dst, src_node, dst_node)
        if plane == Plane.VPC:
            return self._vpc_route(src_node, dst_node)
        raise RouteError(f"plane must be ub, rdma or vpc, got {plane!r}", field="plane")

    def _checked_node(self, endpoint: Endpoint, field: str) -> int:
        try:
            return self.node_of(endpoint)
        except RouteError as err:
            raise RouteError(str(err), field=f"{field}.{err.field}") from None

    def _ub_route(self, src: Endpoint, dst: Endpoint, src_node: int, dst_node: int, op: Op | None) -> Route:
        is_inter = src_node != dst_node
        if src.kind == "cpu" and dst.kind == "cpu":
            raise RouteError("UB transfers need at least one die endpoint (CPU<->CPU is not modelled)", "dst")
        if src.kind == "die" and dst.kind == "die":
            path, op = "npu-npu", op or Op.READ
        else:
            path, natural = "npu-cpu", Op.READ if src.kind == "cpu" else Op.WRITE
            if op not in (None, natural):
                raise RouteError(f"op must be {natural.value} for {src.kind}->{dst.kind} on UB", field="op")
            op = natural
        perf = UB_MEASURED[(path, op, is_inter)]
        if path == "npu-npu" and src.index // DIES_PER_NPU == dst.index // DIES_PER_NPU:
            return self._d2d_route(src.index, dst.index, op)
        tx, rx = f"ub/{src.kind}{src.index}/tx", f"ub/{dst.kind}{dst.index}/rx"
        links = (tx, f"ub/node{src_node}/up", f"ub/node{dst_node}/down", rx) if is_inter else (tx, rx)
        return Route(Plane.UB, op, links, perf.bandwidth_bytes_per_s, perf.latency_s, is_inter)

    def _d2d_route(self, src_die: int, dst_die: int, op: Op) -> Route:
        # ASSUMPTION: the two dies of one package talk over their 270 GB/s cross-die link (ref 1.1), which
        # the paper never measured: no per-transfer cap beyond the link, and the intra-node NPU-NPU latency
        # of ref 1.3 as the fixed cost (the cross-die hop is shorter than an L1-switch hop).
        suffix = "0to1" if src_die % DIES_PER_NPU == 0 else "1to0"
        latency_s = UB_MEASURED[("npu-npu", op, False)].latency_s
        return Route(Plane.UB, op, (f"d2d/npu{src_die // DIES_PER_NPU}/{suffix}",), None, latency_s, False)

    def _rdma_route(self, src: Endpoint, dst: Endpoint, src_node: int, dst_node: int) -> Route:
        if src.kind != "die" or dst.kind != "die":
            raise RouteError("the RDMA plane connects NPU dies only (CPU DRAM is reached over UB)", "plane")
        # ASSUMPTION: the RoCE switch tier is non-blocking (3.2 Tbit/s per node = 16 die ports, ref 1.2), so
        # only the two die ports bind; no measured RDMA efficiency exists, so ports run at line rate.
        links = (rdma_port(src.index, "tx"), rdma_port(dst.index, "rx"))
        return Route(Plane.RDMA, None, links, None, RDMA_LATENCY_S, src_node != dst_node)

    def _vpc_route(self, src_node: int, dst_node: int) -> Route:
        if src_node == dst_node:
            raise RouteError("VPC transfers need endpoints on different nodes", field="dst")
        # ASSUMPTION: the hop between an endpoint and its node's Qingtian card is never the bottleneck.
        links = (f"vpc/node{src_node}/tx", f"vpc/node{dst_node}/rx")
        return Route(Plane.VPC, None, links, None, VPC_LATENCY_S, True)


PATH_DOWN = "path down: "  # how a transfer refused for a downed link says so, the links following


def path_down_message(link_ids: Sequence[str]) -> str:
    return PATH_DOWN + ", ".join(link_ids)


def links_down(message: str) -> tuple[str, ...]:
    """The links a `path_down_message` names (none for any other message)."""
    if not message.startswith(PATH_DOWN):
        return ()
    return tuple(message[len(PATH_DOWN) :].split(", "))


def rdma_port(die: int, direction: str) -> str:
    """A die's RDMA port link ("tx" sends, "rx" receives)."""
    return f"rdma/die{die}/{direction}"


def die_index(node: int, npu: int, die: int) -> int:
    """Global die index of die `die` (0..1) of NPU `npu` (0..7) on node `node`."""
    return (node * NPUS_PER_NODE + npu) * DIES_PER_NPU + die


def die_location(index: int) -> tuple[int, int, int]:
    """(node, npu within node, die within NPU) of a global die index."""
    npu, die = divmod(index, DIES_PER_NPU)
    node, local_npu = divmod(npu, NPUS_PER_NODE)
    return node, local_npu, die


def cpu_index(node: int, cpu: int) -> int:
    """Global CPU index of socket `cpu` (0..3) on node `node`."""
    return node * CPUS_PER_NODE + cpu
