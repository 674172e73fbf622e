"""Communication times: EP dispatch/combine, prefill collectives, KV transfer and cache loads.

Decode dispatch and combine (the low-latency kernels) follow [v3] Table 6 split into a fixed part and a
per-byte part: the per-byte part moves the rank's messages at the link rate (UB NPU->NPU write of
[v2] Table 1 on Ascend; the CX7 NIC on NVIDIA), and the fixed part is what is left of each Table 6
latency at 128 tokens x 8 destinations per rank (interpolated in log2(EP), held beyond the last row).
Prefill's bulk traffic is link-rate: All-Gather at the UB read rate, All-to-All, dispatch and combine at
the write rate on Ascend; on NVIDIA, DeepEP's normal kernels forward over NVLink and send each token once
per remote node over RDMA. KV transfers and cache loads are `latency + bytes / measured rate`.
"""

from __future__ import annotations

import math
from functools import lru_cache

from supernode.hw import calibration as cal
from supernode.hw.specs import CommRow, Hardware


@lru_cache(maxsize=64)
def fixed_us(table: tuple[CommRow, ...], msg_bytes: int, link_bytes_per_s: float, ep: int) -> float:
    """Fixed part (us) of a Table 6 kernel at EP degree `ep`: latency minus the reference bytes at the
    link rate."""
    ref_bytes = cal.TABLE6_TOKENS_PER_RANK.value * cal.TABLE6_DESTINATIONS.value * msg_bytes
    points = [(math.log2(e), max(0.0, lat - ref_bytes / link_bytes_per_s * 1e6)) for e, lat, _ in table]
    x = math.log2(max(1, min(ep, cal.EP_BEYOND_TABLE.value)))
    if x <= points[0][0]:
        return points[0][1]
    for (x0, f0), (x1, f1) in zip(points, points[1:], strict=False):
        if x <= x1:
            return f0 + (x - x0) / (x1 - x0) * (f1 - f0)
    return points[-1][1]


def dispatch_us(hw: Hardware, ep: int, messages: float, aiv_share: float = 1.0) -> float:
    """Low-latency dispatch on the busiest rank: `messages` token copies (INT8/FP8 rows) sent or received.
    The AIV cores drive the writes (AIV-Direct, [v3] §4.2.1): a stream owning `aiv_share` of them moves
    the bytes at that share of the Table 6 per-byte rate (`cal.AIV_DRIVES_EP_WRITES`); the fixed part
    (synchronisation, flags) does not scale."""
    if messages <= 0:
        return 0.0
    fixed = fixed_us(hw.dispatch_table, hw.dispatch_msg_bytes, hw.ep_link_bytes_per_s, ep)
    return fixed + messages * hw.dispatch_msg_bytes / (hw.ep_link_bytes_per_s * aiv_share) * 1e6


def combine_us(hw: Hardware, ep: int, messages: float, aiv_share: float = 1.0) -> float:
    """Low-latency combine on the busiest rank: `messages` expert outputs (BF16 rows) returned, driven by
    `aiv_share` of the die's AIV cores (as dispatch)."""
    if messages <= 0:
        return 0.0
    fixed = fixed_us(hw.combine_table, hw.combine_msg_bytes, hw.ep_link_bytes_per_s, ep)
    return fixed + messages * hw.combine_msg_bytes / (hw.ep_link_bytes_per_s * aiv_share) * 1e6


def rdma_copies_per_token(nodes: int, top_k: int) -> float:
    """Distinct remote nodes a token's top-k experts land on (DeepEP sends one RDMA copy per node)."""
    if nodes <= 1:
        return 0.0
    return (nodes - 1) * (1.0 - (1.0 - 1.0 / nodes) ** top_k)


def bulk_ep_us(hw: Hardware, ep: int, tokens: float, copies: float, msg_bytes: int, link_eff: float) -> float:
    """Prefill dispatch or combine of `tokens` tokens making `copies` remote copies on the busiest rank.

    Ascend: the copies go over UB at `link_eff` x the write rate. NVIDIA (DeepEP normal kernels): each
    token crosses RDMA once per remote node and NVLink for the rest, each at its bottleneck rate.
    """
    if copies <= 0:
        return 0.0
    if hw.devices_per_node <= 0 or hw.normal_rdma_bytes_per_s <= 0:
        return hw.scaleup_latency_us + copies * msg_bytes / (hw.scaleup_bytes_per_s * link_eff) * 1e6
    nodes = max(1, math.ceil(ep / hw.devices_per_node))
    rdma = tokens * rdma_copies_per_token(nodes, cal.TABLE6_DESTINATIONS.value) * msg_bytes
    rdma_us = rdma / (hw.normal_rdma_bytes_per_s * link_eff) * 1e6
    nvl_us = copies * msg_bytes / (hw.scaleup_bytes_per_s * link_eff) * 1e6
    return hw.rdma_latency_us + max(rdma_us, nvl_us)


def all_gather_us(hw: Hardware, bytes_in: float, link_eff: float = 1.0) -> float:
    """All-Gather where this die pulls `bytes_in` from its peers over the scale-up fabric (UB reads)."""
    if bytes_in <= 0:
        return 0.0
    return hw.scaleup_latency_us + bytes_in / (hw.scaleup_read_bytes_per_s * link_eff) * 1e6


def all_to_all_us(hw: Hardware, bytes_out: float, link_eff: float = 1.0) -> float:
    """All-to-All where this die pushes `bytes_out` to its peers over the scale-up fabric (UB writes)."""
    if bytes_out <= 0:
        return 0.0
    return hw.scaleup_latency_us + bytes_out / (hw.scaleup_bytes_per_s * link_eff) * 1e6


def kv_transfer_us(hw: Hardware, num_bytes: float) -> float:
    """Prefill -> decode KV transfer of one request over RDMA, one die to one die ([v3] §4.3.3), us."""
    if num_bytes <= 0:
        return 0.0
    return hw.rdma_latency_us + num_bytes / hw.rdma_bytes_per_s * 1e6


def cache_load_us(hw: Hardware, num_bytes: float) -> float:
    """Context-cache blocks read from the EMS DRAM pool into one die over UB ([v3] §4.4.2), us."""
    if num_bytes <= 0:
        return 0.0
    return hw.pool_latency_us + num_bytes / hw.pool_read_bytes_per_s * 1e6


def cache_loads_us(hw: Hardware, die_bytes: float, source_bytes: float, largest_bytes: float) -> float:
    """Context-cache loads started together from the EMS pool over UB, us: done when the busiest die has
    read `die_bytes` at the pool read rate, the busiest pool CPU socket has served `source_bytes` at its
    UB port rate, and the largest single load (`largest_bytes`, one block's source to one die) has moved.
    Blocks live on the CPU their key hashes to ([v3] §4.4.1), so a shared prefix is served by as many
    sockets as it has blocks, each sending its block once per request."""
    if max(die_bytes, source_bytes, largest_bytes) <= 0:
        return 0.0
    per_s = hw.pool_read_bytes_per_s
    moved = max(die_bytes / per_s, source_bytes / cal.UB_CPU_PORT_BYTES_PER_S.value, largest_bytes / per_s)
    return hw.pool_latency_us + moved * 1e6
