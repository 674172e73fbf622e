"""Roofline: a `Work` item's time on the share of a die a stream owns, at measured efficiencies.

A stream owns a share of the cube cores (AIC or SMs); HBM bandwidth is not split by cores: an op running
alone can use all of it, and two ops running together share it (`decode.py` prices that overlap).
"""

from __future__ import annotations

from dataclasses import dataclass

from supernode.hw.ops import Work
from supernode.hw.specs import SHIPPED, Hardware, Tuning


@dataclass(frozen=True, slots=True)
class Share:
    """The part of a die a stream owns: a fraction in (0, 1] of its cube cores."""

    cube: float = 1.0


FULL = Share()


def peak_ops_per_s(hw: Hardware, work: Work) -> float:
    """Hardware peak for this work's kind and precision (ops/s, whole die)."""
    if work.kind == "gemm" and work.precision == "int8":
        return hw.int8_ops_per_s
    return hw.bf16_flops_per_s


def compute_eff(hw: Hardware, work: Work, tune: Tuning = SHIPPED) -> float:
    """Share of peak: Table 9 for GEMMs; Table 7 for attention, times its serving efficiency (FITTED)."""
    if work.kind == "attn":
        return hw.attn_compute_eff * tune.attn_serving_eff
    return hw.gemm_compute_eff


def compute_us(hw: Hardware, work: Work, share: Share = FULL, tune: Tuning = SHIPPED) -> float:
    """Time at the compute efficiency on the stream's cube share, us."""
    if work.flops <= 0:
        return 0.0
    return work.flops / (peak_ops_per_s(hw, work) * compute_eff(hw, work, tune) * share.cube) * 1e6


def bytes_per_s(hw: Hardware, work: Work, tune: Tuning = SHIPPED) -> float:
    """HBM rate the work reaches alone: Table 8's share of the peak (vector ops too)."""
    return hw.hbm_bytes_per_s * hw.mem_eff


def memory_us(hw: Hardware, work: Work, tune: Tuning = SHIPPED) -> float:
    """Time to move the work's HBM bytes with the whole die's bandwidth, us."""
    return work.bytes / bytes_per_s(hw, work, tune) * 1e6


def time_us(hw: Hardware, work: Work, share: Share = FULL, tune: Tuning = SHIPPED) -> float:
    """Roofline time: the slower of compute and memory, us."""
    return max(compute_us(hw, work, share, tune), memory_us(hw, work, tune))


def is_memory_bound(hw: Hardware, work: Work, share: Share = FULL, tune: Tuning = SHIPPED) -> bool:
    return memory_us(hw, work, tune) >= compute_us(hw, work, share, tune)
