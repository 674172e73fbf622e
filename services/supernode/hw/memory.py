"""HBM per die: weights, dispatch/combine buffers, workspace and KV cache (bytes)."""

from __future__ import annotations

from functools import lru_cache

from supernode.hw import calibration as cal
from supernode.hw import ops
from supernode.hw.specs import KV_BYTES_PER_TOKEN, DecodeDeployment, ModelConfig, PrefillDeployment


def _embed_and_head_bytes(m: ModelConfig) -> float:
    """Embedding table and LM head, BF16."""
    return 2 * m.vocab * m.hidden * ops.BF16_BYTES


def _mtp_extra_bytes(dep: DecodeDeployment) -> float:
    """MTP module weights beyond one MoE layer: its 2h -> h projection (BF16)."""
    return 2 * dep.model.hidden * dep.model.hidden * ops.BF16_BYTES if dep.mtp_depth > 0 else 0.0


@lru_cache(maxsize=256)
def decode_weight_bytes(dep: DecodeDeployment) -> float:
    """Weights on one decode die: full MLA and dense FFN (DP attention), its expert slots, gate, head."""
    m = dep.model
    num_moe = m.num_moe_layers + (m.num_mtp_layers if dep.mtp_depth > 0 else 0)
    num_attn = m.num_layers + (m.num_mtp_layers if dep.mtp_depth > 0 else 0)
    return (
        num_attn * ops.weight_bytes(ops.mla_params(m), dep.attn_precision)
        + m.num_dense_layers * ops.weight_bytes(ops.expert_params(m, m.dense_intermediate), dep.moe_precision)
        + num_moe
        * dep.experts_per_die
        * ops.weight_bytes(ops.expert_params(m, m.expert_intermediate), dep.moe_precision)
        + num_moe * m.hidden * m.num_routed_experts * ops.BF16_BYTES
        + _embed_and_head_bytes(m)
        + _mtp_extra_bytes(dep)
    )


def comm_buffer_bytes(dep: DecodeDeployment, batch_per_die: int) -> float:
    """Static dispatch + combine buffers: rank_num x max_tokens x msg ([v3] §4.2.1)."""
    hw, m = dep.hardware, dep.model
    max_tokens = batch_per_die * (1 + dep.mtp_depth) * min(m.top_k, dep.experts_per_die)
    return dep.ep_size * max_tokens * (hw.dispatch_msg_bytes + hw.combine_msg_bytes)


def kv_bytes_per_token(dep: DecodeDeployment) -> float:
    """KV bytes per cached token on a decode die: 61 layers, plus the MTP layer's when MTP is on."""
    extra = dep.model.kv_bytes_per_token_layer * dep.model.num_mtp_layers if dep.mtp_depth > 0 else 0
    return KV_BYTES_PER_TOKEN + extra


def decode_memory_bytes(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> float:
    """HBM in use on one decode die holding `batch_per_die` sequences of `kv_len` tokens."""
    buffers = comm_buffer_bytes(dep, max(batch_per_die, dep.max_batch_per_die))
    kv = batch_per_die * (kv_len + dep.mtp_depth) * kv_bytes_per_token(dep)
    return decode_weight_bytes(dep) + buffers + cal.WORKSPACE_BYTES_PER_DIE.value + kv


def kv_capacity_tokens_per_die(dep: DecodeDeployment) -> int:
    """KV tokens that fit on one decode die after weights, buffers (sized for max_batch_per_die) and
    workspace."""
    used = decode_memory_bytes(dep, 0, 0)
    return max(0, int((dep.hardware.hbm_bytes - used) // kv_bytes_per_token(dep)))


def max_batch_by_memory(dep: DecodeDeployment, kv_len: int) -> int:
    """Largest batch per die whose KV of `kv_len` tokens each (and buffers) fits in HBM."""
    lo, hi = 0, 1
    while decode_memory_bytes(dep, hi, kv_len) <= dep.hardware.hbm_bytes and hi < 1 << 20:
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if decode_memory_bytes(dep, mid, kv_len) <= dep.hardware.hbm_bytes else (lo, mid)
    return lo


@lru_cache(maxsize=64)
def prefill_weight_bytes(dep: PrefillDeployment) -> float:
    """Weights on one prefill die: SP parts of MLA in full, TP parts (q_b, kv_b) by head share."""
    m, n = dep.model, dep.num_dies
    tp = (ops.q_b_params(m) + ops.kv_b_params(m)) / (n if dep.attention == "hybrid" else 1)
    mla = ops.mla_params(m) - ops.q_b_params(m) - ops.kv_b_params(m) + tp
    return (
        m.num_layers * ops.weight_bytes(mla, dep.attn_precision)
        + m.num_dense_layers * ops.weight_bytes(ops.expert_params(m, m.dense_intermediate), dep.moe_precision)
        + m.num_moe_layers
        * dep.experts_per_die
        * ops.weight_bytes(ops.expert_params(m, m.expert_intermediate), dep.moe_precision)
        + m.num_moe_layers * m.hidden * m.num_routed_experts * ops.BF16_BYTES
        + _embed_and_head_bytes(m)
    )


def prefill_memory_bytes(dep: PrefillDeployment, tokens_per_die: float, kv_tokens_per_die: float) -> float:
    """HBM in use on one prefill die: weights, KV of the batch, dispatch/combine buffers, workspace."""
    hw, m = dep.hardware, dep.model
    buffers = tokens_per_die * m.top_k * (hw.dispatch_msg_bytes + hw.combine_msg_bytes)
    kv = kv_tokens_per_die * KV_BYTES_PER_TOKEN
    return prefill_weight_bytes(dep) + buffers + kv + cal.WORKSPACE_BYTES_PER_DIE.value
