"""Roofline: a `Work` item's time on the share of a die a stream owns, at measured efficiencies."""

from __future__ import annotations

from dataclasses import dataclass

from supernode.hw.ops import Work
from supernode.hw.specs import Hardware


@dataclass(frozen=True, slots=True)
class Share:
    """The part of a die a stream owns: cube throughput and HBM bandwidth, as fractions in (0, 1]."""

    cube: float = 1.0
    bw: float = 1.0


FULL = Share()


def peak_ops_per_s(hw: Hardware, work: Work) -> float:
    """Hardware peak for this work's kind and precision (ops/s, whole die)."""
    if work.kind == "gemm" and work.precision == "int8":
        return hw.int8_ops_per_s
    return hw.bf16_flops_per_s


def compute_us(hw: Hardware, work: Work, share: Share = FULL) -> float:
    """Time at the measured compute efficiency (Table 9 for GEMMs, Table 7 for attention), us."""
    if work.flops <= 0:
        return 0.0
    eff = hw.attn_compute_eff if work.kind == "attn" else hw.gemm_compute_eff
    return work.flops / (peak_ops_per_s(hw, work) * eff * share.cube) * 1e6


def memory_us(hw: Hardware, work: Work, share: Share = FULL) -> float:
    """Time to move the work's HBM bytes at the measured memory efficiency (Table 8), us."""
    return work.bytes / (hw.hbm_bytes_per_s * hw.mem_eff * share.bw) * 1e6


def time_us(hw: Hardware, work: Work, share: Share = FULL) -> float:
    """Roofline time: the slower of compute and memory, us."""
    return max(compute_us(hw, work, share), memory_us(hw, work, share))


def is_memory_bound(hw: Hardware, work: Work, share: Share = FULL) -> bool:
    return memory_us(hw, work, share) >= compute_us(hw, work, share)
