"""One prefill batch on an instance: the busiest die, layer by layer, compute overlapped with communication.

Hybrid SP-TP-SP MLA ([v3] §4.3.1): tokens are packed evenly over the dies (SP) for the down-projections,
an All-Gather of the compressed latents gives every die all tokens for its share of heads (TP) for the
up-projections and FlashAttention, and an All-to-All returns each die its own tokens for O_proj (SP).
With `attention="dp"` whole sequences are placed on dies (longest first) and the collectives vanish.
MoE is EP over the instance with Table 6 dispatch/combine. With microbatching ([v3] §4.3.2) AIC/AIV
compute of one microbatch overlaps the communication (SDMA) of the other: a layer takes
max(n x compute, n x comm, compute + comm) for n microbatches of equal size; otherwise compute + comm.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from supernode.hw import calibration as cal
from supernode.hw import comm, ops
from supernode.hw.placement import moe_load, placement
from supernode.hw.result import Cost, PartTimes
from supernode.hw.roofline import time_us
from supernode.hw.specs import PrefillDeployment

Parts = dict[str, float]
COMM_PARTS = frozenset({"attn_all_gather", "attn_all_to_all", "dispatch", "combine"})


def _pairs(new: int, cached: int) -> float:
    """Causal (query, key) pairs of `new` tokens after `cached` prefix tokens."""
    return new * cached + new * (new + 1) / 2


def _dp_busiest(new: Sequence[int], cached: Sequence[int], num_dies: int) -> tuple[float, float, float]:
    """Longest-processing-time placement of whole sequences: the busiest die's (tokens, pairs, cached)."""
    heap = [(0.0, 0.0, 0.0, float(i)) for i in range(num_dies)]  # (pairs, tokens, cached, die)
    for n, c in sorted(zip(new, cached, strict=True), key=lambda x: -_pairs(*x)):
        pairs, tokens, cach, i = heapq.heappop(heap)
        heapq.heappush(heap, (pairs + _pairs(n, c), tokens + n, cach + c, i))
    pairs, tokens, cach, _ = max(heap)
    return tokens, pairs, cach


def _shape(
    dep: PrefillDeployment, new: Sequence[int], cached: Sequence[int]
) -> tuple[float, float, float, float]:
    """Busiest die's (own tokens, attention pairs, cached tokens expanded, head fraction)."""
    n = dep.num_dies
    if dep.attention == "dp":
        tokens, pairs, cach = _dp_busiest(new, cached, n)
        return tokens, pairs, cach, 1.0
    total_pairs = sum(_pairs(a, b) for a, b in zip(new, cached, strict=True))
    head_frac = math.ceil(dep.model.num_heads / n) / dep.model.num_heads
    return sum(new) / n, total_pairs, float(sum(cached)), head_frac


def _attn_parts(
    dep: PrefillDeployment, tokens: float, all_new: float, pairs: float, cached: float, hf: float
) -> Parts:
    """Attention block of one layer for one microbatch (us): compute and its collectives."""
    m, hw, prec = dep.model, dep.hardware, dep.attn_precision
    tp_new = tokens if dep.attention == "dp" else all_new
    prolog = ops.mla_prolog_prefill(m, tokens, tp_new, cached, hf, prec)
    parts = {
        "mla_prolog": time_us(hw, prolog),
        "attention": time_us(hw, ops.attention_prefill(m, pairs, tp_new + cached, hf)),
        "o_proj": time_us(hw, ops.o_proj_prefill(m, tokens, prec)),
    }
    if dep.attention == "hybrid" and dep.num_dies > 1:
        peers = (dep.num_dies - 1) / dep.num_dies
        latent = (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_dim) * ops.BF16_BYTES
        parts["attn_all_gather"] = comm.all_gather_us(hw, all_new * peers * latent)
        parts["attn_all_to_all"] = comm.all_to_all_us(hw, tokens * (1 - hf) * m.num_heads * m.v_head_dim * 2)
    return parts


def _ffn_parts(dep: PrefillDeployment, tokens: float, dense: bool) -> Parts:
    """FFN block of one layer for one microbatch of `tokens` tokens per die (us)."""
    m, hw = dep.model, dep.hardware
    if dense:
        return {"dense_ffn": time_us(hw, ops.dense_ffn(m, tokens, dep.moe_precision))}
    p = placement(m, dep.ep_size, dep.experts_per_die, dep.num_redundant_experts)
    load = moe_load(m, p, tokens, dep.expert_imbalance)
    msgs = max(load.sent, load.received)
    return {
        "gate": time_us(hw, ops.gate(m, tokens)),
        "dispatch": comm.dispatch_us(hw, dep.ep_size, msgs),
        "experts": time_us(hw, ops.experts(m, load.expert_tokens, dep.experts_per_die, dep.moe_precision)),
        "combine": comm.combine_us(hw, dep.ep_size, msgs),
    }


def _elapsed(parts: Parts, num_mbs: int) -> float:
    """Layer time for `num_mbs` equal microbatches whose per-microbatch busy parts are `parts`."""
    t_comm = sum(t for n, t in parts.items() if n in COMM_PARTS)
    t_comp = sum(parts.values()) - t_comm
    if num_mbs <= 1:
        return t_comp + t_comm
    return max(num_mbs * t_comp, num_mbs * t_comm, t_comp + t_comm)


def _layers(
    dep: PrefillDeployment, new: Sequence[int], cached: Sequence[int]
) -> list[tuple[Parts, float, int]]:
    """[(busy parts, elapsed us, repetitions)] for the dense and the MoE layers of one batch."""
    m = dep.model
    tokens, pairs, kv_cached, hf = _shape(dep, new, cached)
    mbs = max(1, min(dep.microbatches, int(tokens)))
    scale = 1.0 / mbs
    attn = _attn_parts(dep, tokens * scale, sum(new) * scale, pairs * scale, kv_cached * scale, hf)
    out = []
    for dense, count in ((True, m.num_dense_layers), (False, m.num_moe_layers)):
        per_mb = {**attn, **_ffn_parts(dep, tokens * scale, dense)}
        out.append(({k: v * mbs for k, v in per_mb.items()}, _elapsed(per_mb, mbs), count))
    return out


def prefill_batch_cost(
    dep: PrefillDeployment,
    new_tokens: Sequence[int],
    cached_tokens: Sequence[int],
    *,
    lm_head_tokens: Sequence[int] | None = None,
) -> Cost:
    """One prefill batch on the whole instance (us): sequence i computes new_tokens[i] tokens after
    cached_tokens[i] prefix tokens already in HBM (their attention still costs; loading them does not).
    lm_head_tokens[i] = positions of sequence i projected onto the vocabulary (None = one per
    sequence, its last token; a scoring job projects its question positions). An empty batch costs 0."""
    if len(new_tokens) != len(cached_tokens):
        raise ValueError("new_tokens and cached_tokens must have the same length")
    if lm_head_tokens is not None and len(lm_head_tokens) != len(new_tokens):
        raise ValueError("lm_head_tokens must have one count per sequence")
    if sum(new_tokens) == 0:
        return Cost(0.0, {}, {})
    m = dep.model
    acc = PartTimes()
    for busy, elapsed, count in _layers(dep, new_tokens, cached_tokens):
        acc.add_overlapped(busy, elapsed, count)
    # Vocabulary projections the busiest die computes (by default each sequence's last token).
    num_projected = len(new_tokens) if lm_head_tokens is None else sum(lm_head_tokens)
    last = math.ceil(num_projected / dep.num_dies)
    acc.add("lm_head", time_us(dep.hardware, ops.lm_head(m, last)))
    acc.add("sampling", time_us(dep.hardware, ops.sampling(m, last)))
    acc.add("launch", cal.GRAPH_LAUNCH_US.value)
    return acc.cost()


def prefill_moe_layer_cost(
    dep: PrefillDeployment, new_tokens: Sequence[int], cached_tokens: Sequence[int]
) -> Cost:
    """One MoE layer of the batch (us), for reporting."""
    if sum(new_tokens) == 0:
        return Cost(0.0, {}, {})
    busy, elapsed, _ = _layers(dep, new_tokens, cached_tokens)[-1]
    acc = PartTimes()
    acc.add_overlapped(busy, elapsed)
    return acc.cost()
