"""Communication times: EP dispatch/combine, prefill attention collectives, KV transfer and cache loads.

Dispatch and combine follow [v3] Table 6 as `fixed(EP) + bytes / bandwidth(EP)`. For each table row
fixed = latency - 128 x 8 x msg / bandwidth (about 6 us on CM384, 0 for DeepEP on H800); both terms are
interpolated in log2(EP) and held at the last row beyond it. Bulk collectives and transfers are
`latency + bytes / measured link bandwidth` ([v2] Table 1, §3.3.1).
"""

from __future__ import annotations

import math
from functools import lru_cache

from supernode.hw import calibration as cal
from supernode.hw.specs import CommRow, Hardware


@lru_cache(maxsize=64)
def _fixed_and_bw(table: tuple[CommRow, ...], msg_bytes: int, ep: int) -> tuple[float, float]:
    """(fixed us, bandwidth B/s) at EP degree `ep`, from a Table 6 style table."""
    ref_bytes = cal.TABLE6_TOKENS_PER_RANK.value * cal.TABLE6_DESTINATIONS.value * msg_bytes
    points = [(math.log2(e), max(0.0, lat - ref_bytes / bw * 1e6), bw) for e, lat, bw in table]
    x = math.log2(max(1, min(ep, cal.EP_BEYOND_TABLE.value)))
    if x <= points[0][0]:
        return points[0][1], points[0][2]
    for (x0, f0, b0), (x1, f1, b1) in zip(points, points[1:], strict=False):
        if x <= x1:
            t = (x - x0) / (x1 - x0)
            return f0 + t * (f1 - f0), b0 + t * (b1 - b0)
    return points[-1][1], points[-1][2]


def dispatch_us(hw: Hardware, ep: int, messages: float) -> float:
    """FusedDispatch on the busiest rank: `messages` token copies sent or received (INT8, 7.5 KB each)."""
    if messages <= 0:
        return 0.0
    fixed, bw = _fixed_and_bw(hw.dispatch_table, hw.dispatch_msg_bytes, ep)
    return fixed + messages * hw.dispatch_msg_bytes / bw * 1e6


def combine_us(hw: Hardware, ep: int, messages: float) -> float:
    """FusedCombine on the busiest rank: `messages` expert outputs returned (BF16, 14 KB each)."""
    if messages <= 0:
        return 0.0
    fixed, bw = _fixed_and_bw(hw.combine_table, hw.combine_msg_bytes, ep)
    return fixed + messages * hw.combine_msg_bytes / bw * 1e6


def all_gather_us(hw: Hardware, bytes_in: float) -> float:
    """All-Gather where this die pulls `bytes_in` from its peers over the scale-up fabric (UB reads)."""
    if bytes_in <= 0:
        return 0.0
    return hw.scaleup_latency_us + bytes_in / hw.scaleup_read_bytes_per_s * 1e6


def all_to_all_us(hw: Hardware, bytes_out: float) -> float:
    """All-to-All where this die pushes `bytes_out` to its peers over the scale-up fabric (UB writes)."""
    if bytes_out <= 0:
        return 0.0
    return hw.scaleup_latency_us + bytes_out / hw.scaleup_bytes_per_s * 1e6


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
