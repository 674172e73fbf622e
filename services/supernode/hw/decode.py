"""One decode step of the busiest die: 61 layers (+ MTP) with two-stream microbatch overlap.

Each die runs DP attention on its own sequences and hosts `experts_per_die` expert slots of the EP group.
With microbatching ([v3] §4.2.3) the batch is split in two; stream 0 runs MLAProlog, FusedAttention and
O_proj on its AIC/AIV cores while stream 1 runs gate, dispatch, experts and combine (dense FFN in the first
three layers) on the rest. A layer then takes max(stream 0 busy, stream 1 busy) for the two microbatches.
Each stream gets the cube throughput of its AIC share and the HBM bandwidth of its core share
(ASSUMPTION: bandwidth splits like the cores issuing the loads). Dispatch/combine are link-bound and
keep their Table 6 time whatever the cores. Without microbatching the ops run one after the other on the
whole die. All ranks are assumed to hold the busiest die's batch (DP attention is load-balanced).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from supernode.hw import calibration as cal
from supernode.hw import comm, ops
from supernode.hw.placement import moe_load, placement
from supernode.hw.result import Cost, PartTimes, merge
from supernode.hw.roofline import FULL, Share, time_us
from supernode.hw.specs import DecodeDeployment

Parts = dict[str, float]


@lru_cache(maxsize=256)
def stream_shares(dep: DecodeDeployment, overlapped: bool) -> tuple[Share, Share]:
    """(stream 0, stream 1) shares of the die; both the whole die when the streams do not overlap."""
    if not overlapped:
        return FULL, FULL
    aic = dep.attn_stream_aic + dep.moe_stream_aic
    cores = aic + dep.attn_stream_aiv + dep.moe_stream_aiv
    s0 = Share(dep.attn_stream_aic / aic, (dep.attn_stream_aic + dep.attn_stream_aiv) / cores)
    s1 = Share(dep.moe_stream_aic / aic, (dep.moe_stream_aic + dep.moe_stream_aiv) / cores)
    return s0, s1


@lru_cache(maxsize=4096)
def attn_weights_parts(dep: DecodeDeployment, tokens: int, share: Share) -> Parts:
    """MLAProlog and O_proj busy time (us) for `tokens` query tokens."""
    m, hw = dep.model, dep.hardware
    return {
        "mla_prolog": time_us(hw, ops.mla_prolog_decode(m, tokens, dep.attn_precision), share),
        "o_proj": time_us(hw, ops.o_proj_decode(m, tokens, dep.attn_precision), share),
    }


@lru_cache(maxsize=4096)
def moe_parts(dep: DecodeDeployment, tokens: int, share: Share) -> Parts:
    """Stream-1 busy time (us) of one MoE layer for `tokens` tokens on every rank."""
    m, hw = dep.model, dep.hardware
    p = placement(m, dep.ep_size, dep.experts_per_die, dep.num_redundant_experts)
    load = moe_load(m, p, tokens, dep.expert_imbalance)
    return {
        "gate": time_us(hw, ops.gate(m, tokens), share),
        "dispatch": comm.dispatch_us(hw, dep.ep_size, max(load.sent, load.received)),
        "experts": time_us(
            hw, ops.experts(m, load.expert_tokens, dep.experts_per_die, dep.moe_precision), share
        ),
        "combine": comm.combine_us(hw, dep.ep_size, max(load.sent, load.received)),
    }


@lru_cache(maxsize=4096)
def dense_parts(dep: DecodeDeployment, tokens: int, share: Share) -> Parts:
    return {"dense_ffn": time_us(dep.hardware, ops.dense_ffn(dep.model, tokens, dep.moe_precision), share)}


def _attn_parts(dep: DecodeDeployment, num_seqs: int, kv_sum: float, share: Share) -> Parts:
    q = 1 + dep.mtp_depth
    work = ops.attention_decode(dep.model, num_seqs, kv_sum, q)
    parts = dict(attn_weights_parts(dep, num_seqs * q, share))
    parts["attention"] = time_us(dep.hardware, work, share)
    return parts


def _layer(dep: DecodeDeployment, mbs: list[tuple[int, float]], dense: bool) -> tuple[Parts, float]:
    """Busy parts and elapsed time (us) of one layer over the microbatches [(num_seqs, kv_sum)]."""
    s0_share, s1_share = stream_shares(dep, len(mbs) > 1)
    q = 1 + dep.mtp_depth
    s0: Parts = {}
    s1: Parts = {}
    for num_seqs, kv_sum in mbs:
        merge(s0, _attn_parts(dep, num_seqs, kv_sum, s0_share))
        other = dense_parts if dense else moe_parts
        merge(s1, other(dep, num_seqs * q, s1_share))
    t0, t1 = sum(s0.values()), sum(s1.values())
    elapsed = max(t0, t1) if len(mbs) > 1 else t0 + t1
    return merge(s0, s1), elapsed


def _microbatches(dep: DecodeDeployment, kv_lens: Sequence[int]) -> list[tuple[int, float]]:
    n = min(max(1, dep.microbatches), len(kv_lens))
    return [(len(kv_lens[i::n]), float(sum(kv_lens[i::n]))) for i in range(n)]


def _head_parts(dep: DecodeDeployment, batch: int) -> Parts:
    """LM head and sampling for the main model and each MTP draft (1 + depth passes over the weights)."""
    m, hw = dep.model, dep.hardware
    tokens = batch * (1 + dep.mtp_depth)
    passes = 1 + dep.mtp_depth
    return {
        "lm_head": passes * time_us(hw, ops.lm_head(m, tokens)),
        "sampling": passes * time_us(hw, ops.sampling(m, tokens)),
    }


def decode_step_cost(dep: DecodeDeployment, batch_per_die: int, kv_lens: Sequence[int]) -> Cost:
    """One decode step (us) of the busiest die holding `batch_per_die` sequences with KV lengths `kv_lens`.

    With MTP depth d the step verifies 1 + d tokens per sequence and runs the MTP layer d times. An empty
    batch costs 0: an idle instance does not step.
    """
    if len(kv_lens) != batch_per_die:
        raise ValueError(f"len(kv_lens)={len(kv_lens)} != batch_per_die={batch_per_die}")
    if batch_per_die == 0:
        return Cost(0.0, {}, {})
    m = dep.model
    mbs = _microbatches(dep, kv_lens)
    acc = PartTimes()
    busy, elapsed = _layer(dep, mbs, dense=True)
    acc.add_overlapped(busy, elapsed, m.num_dense_layers)
    busy, elapsed = _layer(dep, mbs, dense=False)
    acc.add_overlapped(busy, elapsed, m.num_moe_layers)
    if dep.mtp_depth > 0:
        proj = time_us(dep.hardware, ops.mtp_proj(m, batch_per_die * (1 + dep.mtp_depth), dep.attn_precision))
        acc.add("mtp_layer", elapsed + proj, dep.mtp_depth)
    for name, t in _head_parts(dep, batch_per_die).items():
        acc.add(name, t)
    acc.add("launch", 0.0 if dep.hide_graph_launch else launch_us(dep))
    return acc.cost()


def launch_us(dep: DecodeDeployment) -> float:
    """Graph dispatch time per step when it is not hidden: one graph per verified token ([v3] §4.2.4)."""
    return cal.GRAPH_LAUNCH_US.value * (1 + dep.mtp_depth)


def moe_layer_us(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> Cost:
    """One MoE layer (us) with uniform KV length, for reporting."""
    if batch_per_die == 0:
        return Cost(0.0, {}, {})
    acc = PartTimes()
    busy, elapsed = _layer(dep, _microbatches(dep, [kv_len] * batch_per_die), dense=False)
    acc.add_overlapped(busy, elapsed)
    return acc.cost()


def step_works(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> list[ops.Work]:
    """Work items of one MoE layer, one dense FFN and the head for a step, on the whole die (for checks)."""
    m, q = dep.model, 1 + dep.mtp_depth
    tokens = batch_per_die * q
    load = moe_load(m, placement(m, dep.ep_size, dep.experts_per_die, dep.num_redundant_experts), tokens, 1.0)
    return [
        ops.mla_prolog_decode(m, tokens, dep.attn_precision),
        ops.attention_decode(m, batch_per_die, float(batch_per_die * kv_len), q),
        ops.o_proj_decode(m, tokens, dep.attn_precision),
        ops.gate(m, tokens),
        ops.experts(m, load.expert_tokens, dep.experts_per_die, dep.moe_precision),
        ops.dense_ffn(m, tokens, dep.moe_precision),
        ops.lm_head(m, tokens),
        ops.sampling(m, tokens),
    ]
