"""Public cost API: price a prefill batch or a decode step, and the helpers built on them.

Pure: no I/O, no clock, no randomness. Times are microseconds unless the name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from supernode.hw.decode import decode_step_cost, moe_layer_us
from supernode.hw.memory import kv_capacity_tokens_per_die, max_batch_by_memory
from supernode.hw.prefill import prefill_batch_cost
from supernode.hw.result import PARTS, Cost
from supernode.hw.specs import DecodeDeployment, PrefillDeployment

__all__ = [
    "PARTS",
    "Cost",
    "PrefillWorkload",
    "decode_step_cost",
    "decode_tokens_per_s_per_npu",
    "kv_capacity_tokens_per_die",
    "max_batch_per_die_for_tpot",
    "moe_layer_us",
    "prefill_batch_cost",
    "prefill_tokens_per_s_per_npu",
    "prefill_workload_cost",
    "tpot_ms",
]


def tpot_ms(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> float:
    """Time per output token (ms): one step with every sequence at `kv_len`, over 1 + depth x accept."""
    step = decode_step_cost(dep, batch_per_die, [kv_len] * batch_per_die)
    return step.total_us / 1e3 / dep.tokens_per_step


def decode_tokens_per_s_per_npu(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> float:
    """Decode throughput per NPU (tokens/s) = batch per NPU / TPOT."""
    if batch_per_die == 0:
        return 0.0
    return batch_per_die * dep.dies_per_npu / (tpot_ms(dep, batch_per_die, kv_len) / 1e3)


def max_batch_per_die_for_tpot(dep: DecodeDeployment, kv_len: int, tpot_slo_ms: float) -> int:
    """Largest batch per die that meets the TPOT SLO (ms) and fits in HBM at `kv_len`; 0 if none."""
    best = 0
    for batch in range(1, max_batch_by_memory(dep, kv_len) + 1):
        if tpot_ms(dep, batch, kv_len) > tpot_slo_ms:
            break
        best = batch
    return best


@dataclass(frozen=True, slots=True)
class PrefillWorkload:
    """A uniform prefill batch: equal prompts filling `tokens_per_npu` per NPU, a share of them cached."""

    prompt_len: int = 4096
    tokens_per_npu: int = 16384
    cache_hit: float = 0.0  # fraction of each prompt found in the context cache

    def sequences(self, dep: PrefillDeployment) -> tuple[list[int], list[int]]:
        """(new_tokens, cached_tokens) per sequence for the whole instance."""
        if self.prompt_len < 1 or not 0.0 <= self.cache_hit < 1.0:
            raise ValueError("prompt_len must be >= 1 and cache_hit in [0, 1)")
        num = max(1, self.tokens_per_npu * dep.num_npus // self.prompt_len)
        cached = int(self.prompt_len * self.cache_hit)
        return [self.prompt_len - cached] * num, [cached] * num


def prefill_workload_cost(dep: PrefillDeployment, work: PrefillWorkload) -> Cost:
    new, cached = work.sequences(dep)
    return prefill_batch_cost(dep, new, cached)


def prefill_tokens_per_s_per_npu(dep: PrefillDeployment, work: PrefillWorkload | None = None) -> float:
    """Prefill throughput per NPU (prompt tokens/s, cache hits included as in [DS-D6])."""
    work = work or PrefillWorkload()
    new, cached = work.sequences(dep)
    cost = prefill_batch_cost(dep, new, cached)
    return (sum(new) + sum(cached)) / dep.num_npus / (cost.total_us / 1e6)
