"""Decode pipeline stages: what one microbatch asks of one stream in one layer, and how two overlap.

Stream 0 (attention) runs MLAProlog, FusedAttention, O_proj and their vector ops; stream 1 (MoE) runs
gate, dispatch, experts, combine and theirs, or the dense FFN in the first layers ([v3] §4.2.3). A stage
is priced on the cube share its stream owns with the whole HBM bandwidth. Two stages running at once
share HBM: together they take at least their summed HBM time. Where the streams own disjoint cores
(Ascend AIC/AIV) that is the only interaction; where they time-share the cores (NVIDIA SMs, DeepSeek's
pipeline) their core-bound work also adds up and only the link-bound communication hides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from supernode.hw import comm, ops
from supernode.hw.placement import moe_load, placement
from supernode.hw.roofline import Share, compute_us, memory_us, time_us
from supernode.hw.specs import DecodeDeployment, Hardware

LINK_PARTS = frozenset({"dispatch", "combine"})


@dataclass(frozen=True, slots=True)
class Stage:
    """One stream's work for one microbatch in one layer (us)."""

    parts: tuple[tuple[str, float], ...]  # (part, busy us alone on its cores with all of HBM)
    hbm_us: float  # its HBM traffic at the full measured rate
    link_us: float  # link-bound communication inside it (dispatch, combine)
    total_us: float  # sum of the parts


def _make(parts: tuple[tuple[str, float], ...], hbm_us: float, link_us: float) -> Stage:
    return Stage(parts, hbm_us, link_us, sum(t for _, t in parts))


EMPTY = Stage((), 0.0, 0.0, 0.0)


def pair_us(a: Stage, b: Stage, hw: Hardware) -> float:
    """Time for stages `a` and `b` (one per stream) started together to both finish."""
    t = max(a.total_us, b.total_us, a.hbm_us + b.hbm_us)
    if not hw.splits_cores:
        t = max(t, a.total_us - a.link_us + b.total_us - b.link_us)
    return t


def _stage(dep: DecodeDeployment, works: list[ops.Work], share: Share, extra: dict[str, float]) -> Stage:
    hw, tune = dep.hardware, dep.tuning
    rate = hw.hbm_bytes_per_s * hw.mem_eff
    parts: dict[str, float] = {}
    for w in works:
        parts[w.part] = parts.get(w.part, 0.0) + time_us(hw, w, share, tune)
    parts.update(extra)
    hbm = sum(w.bytes for w in works) / rate * 1e6
    return _make(tuple(parts.items()), hbm, sum(extra.values()))


@lru_cache(maxsize=8192)
def attn_fixed(dep: DecodeDeployment, tokens: int, cube: float) -> Stage:
    """MLAProlog, O_proj and the attention-side vector ops for `tokens` query tokens."""
    m, prec = dep.model, dep.attn_precision
    works = [
        ops.mla_prolog_decode(m, tokens, prec),
        ops.o_proj_decode(m, tokens, prec),
        ops.vector_attn(m, tokens),
    ]
    return _stage(dep, works, Share(cube), {})


@lru_cache(maxsize=8192)
def attn_linear(dep: DecodeDeployment, num_seqs: int, cube: float) -> tuple[Stage, float, float, float]:
    """FusedAttention's time is linear in the context: (the fixed ops' stage, us per context token,
    us for the queries alone, HBM us per context token), priced once per (sequences, cube share).
    KV reads and cube work do not overlap inside FusedAttention, so both slopes add."""
    q = 1 + dep.mtp_depth
    hw, tune = dep.hardware, dep.tuning
    unit = ops.attention_decode(dep.model, num_seqs, 1.0, q)
    base = ops.attention_decode(dep.model, num_seqs, 0.0, q)
    per_kv_hbm = memory_us(hw, unit, tune) - memory_us(hw, base, tune)
    per_kv = compute_us(hw, unit, Share(cube), tune) + per_kv_hbm
    return attn_fixed(dep, num_seqs * q, cube), per_kv, memory_us(hw, base, tune), per_kv_hbm


def attn_stage(dep: DecodeDeployment, num_seqs: int, kv_sum: float, cube: float) -> Stage:
    """Stream-0 stage of `num_seqs` sequences holding `kv_sum` context tokens in total."""
    if num_seqs <= 0:
        return EMPTY
    fixed, per_kv, queries, per_kv_hbm = attn_linear(dep, num_seqs, cube)
    t_attn = per_kv * kv_sum + queries
    parts = (fixed.parts[0], ("attention", t_attn), *fixed.parts[1:])
    return Stage(parts, fixed.hbm_us + per_kv_hbm * kv_sum + queries, 0.0, fixed.total_us + t_attn)


def attn_total_us(dep: DecodeDeployment, num_seqs: int, kv_sum: float, cube: float) -> float:
    """`attn_stage(...).total_us` without building the stage (the same sum, to the last bit)."""
    if num_seqs <= 0:
        return 0.0
    fixed, per_kv, queries, _ = attn_linear(dep, num_seqs, cube)
    return fixed.total_us + (per_kv * kv_sum + queries)


@lru_cache(maxsize=8192)
def moe_stage(dep: DecodeDeployment, tokens: float, cube: float) -> Stage:
    """Stream-1 stage of an MoE layer when every rank holds `tokens` tokens of this microbatch."""
    if tokens <= 0:
        return EMPTY
    m, hw = dep.model, dep.hardware
    p = placement(m, dep.ep_size, dep.experts_per_die, dep.num_redundant_experts)
    load = moe_load(m, p, tokens, dep.expert_imbalance)
    msgs = max(load.sent, load.received)
    works = [
        ops.gate(m, tokens),
        ops.experts(m, load.expert_tokens, dep.experts_per_die, dep.moe_precision),
        ops.vector_moe(m, tokens, load.expert_tokens, load.sent, hw.dispatch_msg_bytes),
    ]
    aiv = cube if hw.splits_cores else 1.0  # AIV-Direct: the stream's vector cores drive the writes
    link = {
        "dispatch": comm.dispatch_us(hw, dep.ep_size, msgs, aiv),
        "combine": comm.combine_us(hw, dep.ep_size, msgs, aiv),
    }
    return _stage(dep, works, Share(cube), link)


@lru_cache(maxsize=8192)
def dense_stage(dep: DecodeDeployment, tokens: float, cube: float) -> Stage:
    """Stream-1 stage of a dense layer (the first three): the FFN and its vector ops."""
    if tokens <= 0:
        return EMPTY
    m = dep.model
    works = [ops.dense_ffn(m, tokens, dep.moe_precision), ops.vector_dense(m, tokens, m.dense_intermediate)]
    return _stage(dep, works, Share(cube), {})
