"""Public cost API: price a prefill batch or a decode step, and the helpers built on them.

Pure: no I/O, no clock, no randomness. Times are microseconds unless the name says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from supernode.hw.decode import decode_step_cost, decode_step_ranks_cost, moe_layer_us
from supernode.hw.memory import kv_capacity_tokens_per_die, max_batch_by_memory
from supernode.hw.prefill import prefill_batch_cost
from supernode.hw.result import PARTS, Cost
from supernode.hw.specs import DecodeDeployment, PrefillDeployment
from supernode.hw.stages import attn_stage

__all__ = [
    "PARTS",
    "Cost",
    "PrefillWorkload",
    "attention_work",
    "decode_step_cost",
    "decode_step_cost_ranks",
    "decode_tokens_per_s_per_npu",
    "kv_capacity_tokens_per_die",
    "max_batch_per_die_for_tpot",
    "moe_layer_us",
    "prefill_batch_cost",
    "prefill_tokens_per_s_per_npu",
    "prefill_workload_cost",
    "tpot_ms",
]


def decode_step_cost_ranks(
    dep: DecodeDeployment, rank_kv_lens: Sequence[Sequence[int]], *, microbatch: bool | None = None
) -> Cost:
    """One decode step (us) priced from the actual per-rank loads.

    `rank_kv_lens` holds one inner sequence per die the caller emulates: the KV (context) lengths of that
    die's sequences. Attention is priced on the busiest rank by work (sequences and their context
    lengths); the MoE on the real mean tokens per rank, since every rank dispatches to all the others.
    A caller emulating only a slice of the EP group (a decode service runs `num_dies` of the instance's
    `ep_size` ranks) passes its slice: the other ranks are taken to mirror the slice's mean load, so the
    group's global token count is that mean x `ep_size`. `microbatch` forces a mode (None: the faster).
    The step costs 0 when no rank holds a sequence.
    """
    ranks = [list(r) for r in rank_kv_lens]
    if not ranks:
        raise ValueError("rank_kv_lens must hold at least one rank")
    if not any(ranks):
        return Cost(0.0, {}, {})
    mean_seqs = sum(len(r) for r in ranks) / len(ranks)
    busiest = max(ranks, key=lambda r: attention_work(dep, r))
    return decode_step_ranks_cost(dep, busiest, mean_seqs, microbatch)


def attention_work(dep: DecodeDeployment, kv_lens: Sequence[int]) -> float:
    """A rank's attention stage time on the whole die (us): what makes it the busiest."""
    return attn_stage(dep, len(kv_lens), float(sum(kv_lens)), 1.0).total_us if kv_lens else 0.0


def tpot_ms(dep: DecodeDeployment, batch_per_die: int, kv_len: int, microbatch: bool | None = None) -> float:
    """Time per output token (ms): one step with every sequence at `kv_len`, over the expected tokens per
    step (MTP drafts accepted one after another, `mtp.expected_tokens_per_step`)."""
    step = decode_step_cost(dep, batch_per_die, [kv_len] * batch_per_die, microbatch=microbatch)
    return step.total_us / 1e3 / dep.tokens_per_step


def decode_tokens_per_s_per_npu(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> float:
    """Decode throughput per NPU (tokens/s) = batch per NPU / TPOT."""
    if batch_per_die == 0:
        return 0.0
    return batch_per_die * dep.dies_per_npu / (tpot_ms(dep, batch_per_die, kv_len) / 1e3)


_LAST_SLO_ANSWER: dict[tuple[DecodeDeployment, float], int] = {}  # where to look first; bounded below


def max_batch_per_die_for_tpot(dep: DecodeDeployment, kv_len: int, tpot_slo_ms: float) -> int:
    """Largest batch per die that meets the TPOT SLO (ms) and fits in HBM at `kv_len`; 0 if none.

    TPOT never falls as the batch grows, so this bisects. A live decode instance asks at every step with
    a slowly moving context length: the previous answer for the same deployment and SLO is checked
    first (two pricings when it still holds); the result does not depend on it."""
    cap = max_batch_by_memory(dep, kv_len)

    def meets(batch: int) -> bool:
        return batch == 0 or tpot_ms(dep, batch, kv_len) <= tpot_slo_ms

    key = (dep, tpot_slo_ms)
    last = _LAST_SLO_ANSWER.get(key)
    if last is not None and last <= cap and meets(last) and (last == cap or not meets(last + 1)):
        return last
    lo, hi = 0, cap  # meets(lo) holds
    if hi >= 1 and meets(hi):
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    if len(_LAST_SLO_ANSWER) >= 256:
        _LAST_SLO_ANSWER.clear()
    _LAST_SLO_ANSWER[key] = lo
    return lo


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
