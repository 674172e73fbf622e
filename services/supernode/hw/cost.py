"""Placeholder roofline timing; the cost-model issue replaces the bodies, keeping the signatures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from supernode.hw.specs import KV_BYTES_PER_TOKEN, DecodeDeployment, PrefillDeployment

_ACTIVE_PARAMS = 37e9
_DIE_INT8_OPS = 752e12
_DIE_HBM_BYTES_PER_S = 1.6e12


@dataclass(frozen=True, slots=True)
class Cost:
    """A priced batch or step: total time and its named parts (microseconds)."""

    total_us: float
    breakdown_us: dict[str, float] = field(default_factory=dict)


def prefill_batch_cost(dep: PrefillDeployment, new_tokens: Sequence[int], cached_tokens: Sequence[int]) -> Cost:
    """Prices one prefill batch on an instance: new_tokens[i] computed after cached_tokens[i] loaded."""
    num_dies = dep.num_npus * dep.dies_per_npu
    flops = 2 * _ACTIVE_PARAMS * sum(new_tokens)
    compute_us = flops / (_DIE_INT8_OPS * num_dies) * 1e6
    weights_us = 671e9 / num_dies / _DIE_HBM_BYTES_PER_S * 1e6
    total = max(compute_us, weights_us)
    return Cost(total, {"compute": total})


def decode_step_cost(dep: DecodeDeployment, batch_per_die: int, kv_lens: Sequence[int]) -> Cost:
    """Prices one decode step for batch_per_die sequences per die with the given KV lengths."""
    kv_bytes = sum(kv_lens) * KV_BYTES_PER_TOKEN
    weights = 14e9
    mem_us = (weights + kv_bytes) / _DIE_HBM_BYTES_PER_S * 1e6
    compute_us = 2 * _ACTIVE_PARAMS * batch_per_die / _DIE_INT8_OPS * 1e6
    total = max(mem_us, compute_us)
    return Cost(total, {"step": total})


def kv_capacity_tokens_per_die(dep: DecodeDeployment) -> int:
    """KV tokens one decode die can hold after weights and buffers."""
    return int(30e9 // KV_BYTES_PER_TOKEN)
