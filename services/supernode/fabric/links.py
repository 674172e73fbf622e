"""Point-to-point transfer pricing from link figures (one flow alone on its path)."""

from __future__ import annotations

from dataclasses import dataclass

from supernode.fabric.leases import DIES_PER_NPU, NPUS_PER_NODE

GB = 1e9
CPUS_PER_NODE = 4  # reference 1.2: 4 Kunpeng CPUs per node


@dataclass(frozen=True, slots=True)
class PathFigures:
    bandwidth_bytes_per_s: float
    latency_s: float


# Reference 1.3 ([v2] Table 1), per die, unidirectional: NPU-NPU read 167/164 GB/s intra/inter node,
# 1.2/1.9 us; NPU-CPU read 151/147 GB/s, 1.0/1.7 us.
UB_NPU_NPU = {True: PathFigures(167 * GB, 1.2e-6), False: PathFigures(164 * GB, 1.9e-6)}
UB_NPU_CPU = {True: PathFigures(151 * GB, 1.0e-6), False: PathFigures(147 * GB, 1.7e-6)}
# Reference 1.1: RDMA 200 Gbit/s per die. ASSUMPTION: RoCE one-way latency 5 us (not in the paper).
RDMA_DIE = PathFigures(200e9 / 8, 5e-6)
# Reference 1.2: VPC 400 Gbit/s per node. ASSUMPTION: 20 us latency through the DPU (not in the paper).
VPC_NODE = PathFigures(400e9 / 8, 20e-6)


def node_of(kind: str, index: int) -> int:
    if kind == "die":
        return index // (NPUS_PER_NODE * DIES_PER_NPU)
    return index // CPUS_PER_NODE


def path_figures(plane: str, src: tuple[str, int], dst: tuple[str, int]) -> PathFigures:
    same_node = node_of(*src) == node_of(*dst)
    if plane == "ub":
        if src[0] == "cpu" or dst[0] == "cpu":
            return UB_NPU_CPU[same_node]
        return UB_NPU_NPU[same_node]
    if plane == "rdma":
        return RDMA_DIE
    return VPC_NODE


def transfer_seconds(figures: PathFigures, num_bytes: int) -> float:
    return figures.latency_s + num_bytes / figures.bandwidth_bytes_per_s
