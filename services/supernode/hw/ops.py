"""Operators of one DeepSeek-R1 layer as work items: FLOPs and HBM bytes, no time.

Each builder prices one operator on one die for one layer. `roofline.py` turns a `Work` into time.
Decode MLA uses weight absorption (attention over the 576-wide latent); prefill MLA does not (a 128-head
MHA, [v3] §4.3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supernode.hw import calibration as cal
from supernode.hw.specs import ModelConfig, Precision

Kind = Literal["gemm", "attn", "vector"]
BF16_BYTES = 2


@dataclass(frozen=True, slots=True)
class Work:
    """One operator on one die: floating-point (or integer) ops and HBM bytes moved."""

    part: str  # breakdown name the time is charged to
    flops: float
    bytes: float
    kind: Kind  # gemm: cube at the precision's peak; attn: BF16 FlashAttention; vector: memory-bound
    precision: Precision = "bf16"


def weight_bytes(num_params: float, precision: Precision) -> float:
    """Bytes of `num_params` weights stored at `precision` (INT8 W8A8 = 1 B, BF16 = 2 B)."""
    return num_params * (1 if precision == "int8" else BF16_BYTES)


def _gemm(part: str, tokens: float, params: float, out_dim: int, in_dim: int, prec: Precision) -> Work:
    act_bytes = tokens * (in_dim * (1 if prec == "int8" else BF16_BYTES) + out_dim * BF16_BYTES)
    return Work(part, 2.0 * tokens * params, weight_bytes(params, prec) + act_bytes, "gemm", prec)


def q_a_params(m: ModelConfig) -> int:
    return m.hidden * m.q_lora_rank


def q_b_params(m: ModelConfig) -> int:
    return m.q_lora_rank * m.num_heads * (m.qk_nope_dim + m.qk_rope_dim)


def kv_a_params(m: ModelConfig) -> int:
    return m.hidden * (m.kv_lora_rank + m.qk_rope_dim)


def kv_b_params(m: ModelConfig) -> int:
    """Up-projection of the latent to per-head K (nope) and V; absorbed in decode as W_UK and W_UV."""
    return m.kv_lora_rank * m.num_heads * (m.qk_nope_dim + m.v_head_dim)


def o_params(m: ModelConfig) -> int:
    return m.num_heads * m.v_head_dim * m.hidden


def mla_params(m: ModelConfig) -> int:
    return q_a_params(m) + q_b_params(m) + kv_a_params(m) + kv_b_params(m) + o_params(m)


def expert_params(m: ModelConfig, intermediate: int) -> int:
    """gate, up and down projections of one SwiGLU FFN."""
    return 3 * m.hidden * intermediate


def mla_prolog_decode(m: ModelConfig, tokens: float, prec: Precision) -> Work:
    """MLAProlog with absorption: q_a, q_b, kv_a and W_UK (q_nope -> latent)."""
    w_uk = m.num_heads * m.qk_nope_dim * m.kv_lora_rank
    params = q_a_params(m) + q_b_params(m) + kv_a_params(m) + w_uk
    return _gemm("mla_prolog", tokens, params, m.num_heads * (m.kv_lora_rank + m.qk_rope_dim), m.hidden, prec)


def o_proj_decode(m: ModelConfig, tokens: float, prec: Precision) -> Work:
    """O_proj with absorption: W_UV (latent -> per-head V) then o_proj."""
    w_uv = m.num_heads * m.v_head_dim * m.kv_lora_rank
    return _gemm("o_proj", tokens, w_uv + o_params(m), m.hidden, m.num_heads * m.kv_lora_rank, prec)


def attention_decode(m: ModelConfig, num_seqs: int, kv_sum: float, tokens_per_seq: int) -> Work:
    """FusedAttention over the latent: every query token of a sequence reads that sequence's KV once."""
    per_pos = 2.0 * m.num_heads * (m.kv_lora_rank + m.qk_rope_dim + m.kv_lora_rank)
    q_bytes = num_seqs * tokens_per_seq * m.num_heads * (2 * m.kv_lora_rank + m.qk_rope_dim) * BF16_BYTES
    kv_bytes = kv_sum * m.kv_bytes_per_token_layer
    return Work("attention", per_pos * kv_sum * tokens_per_seq, kv_bytes + q_bytes, "attn")


def mla_prolog_prefill(
    m: ModelConfig, down_tokens: float, up_tokens: float, up_cached: float, head_frac: float, prec: Precision
) -> Work:
    """Down-projections (q_a, kv_a) of the die's own `down_tokens` (SP) and up-projections (q_b, kv_b) of
    `up_tokens` new tokens for its heads (TP share `head_frac`). The `up_cached` prefix tokens need K/V
    re-expanded from their latent (no absorption in prefill)."""
    down = (q_a_params(m) + kv_a_params(m)) * down_tokens
    up = (q_b_params(m) * up_tokens + kv_b_params(m) * (up_tokens + up_cached)) * head_frac
    params = q_a_params(m) + kv_a_params(m) + (q_b_params(m) + kv_b_params(m)) * head_frac
    down_act = down_tokens * (m.hidden + m.q_lora_rank + m.kv_lora_rank + m.qk_rope_dim) * BF16_BYTES
    per_head = m.qk_nope_dim + m.qk_rope_dim + m.v_head_dim
    up_act = (up_tokens + up_cached) * head_frac * m.num_heads * per_head * BF16_BYTES
    return Work("mla_prolog", 2.0 * (down + up), weight_bytes(params, prec) + down_act + up_act, "gemm", prec)


def attention_prefill(m: ModelConfig, pairs: float, kv_tokens: float, head_frac: float) -> Work:
    """Causal 128-head MHA: `pairs` = sum over sequences of (query, key) pairs; `kv_tokens` keys read."""
    qk_v = m.qk_nope_dim + m.qk_rope_dim + m.v_head_dim
    flops = 2.0 * m.num_heads * qk_v * pairs * head_frac
    return Work("attention", flops, kv_tokens * m.num_heads * qk_v * BF16_BYTES * head_frac, "attn")


def o_proj_prefill(m: ModelConfig, tokens: float, prec: Precision) -> Work:
    return _gemm("o_proj", tokens, o_params(m), m.hidden, m.num_heads * m.v_head_dim, prec)


def gate(m: ModelConfig, tokens: float) -> Work:
    """Router logits, kept in BF16 ([v3] §3.6: critical gating stays high precision)."""
    return _gemm("gate", tokens, m.hidden * m.num_routed_experts, m.num_routed_experts, m.hidden, "bf16")


def experts(m: ModelConfig, tokens: float, num_experts: int, prec: Precision) -> Work:
    """Grouped SwiGLU GEMMs: `tokens` token-expert pairs over `num_experts` resident experts."""
    p = expert_params(m, m.expert_intermediate)
    act = tokens * m.hidden * (1 + 2 * BF16_BYTES)
    return Work("experts", 2.0 * tokens * p, weight_bytes(p * num_experts, prec) + act, "gemm", prec)


def dense_ffn(m: ModelConfig, tokens: float, prec: Precision) -> Work:
    work = _gemm("dense_ffn", tokens, expert_params(m, m.dense_intermediate), m.hidden, m.hidden, prec)
    return work


def lm_head(m: ModelConfig, tokens: float, prec: Precision = "int8") -> Work:
    """Vocabulary projection at the model's GEMM precision (calibration.LM_HEAD_PRECISION)."""
    return _gemm("lm_head", tokens, m.vocab * m.hidden, m.vocab, m.hidden, prec)


def mtp_proj(m: ModelConfig, tokens: float, prec: Precision) -> Work:
    """MTP module's projection of [hidden; embedding] (2h -> h)."""
    return _gemm("mtp_layer", tokens, 2 * m.hidden * m.hidden, m.hidden, 2 * m.hidden, prec)


def sampling(m: ModelConfig, tokens: float) -> Work:
    """In-NPU sampling: a few memory-bound passes over the logits."""
    passes = cal.SAMPLING_PASSES.value * cal.LOGIT_BYTES.value
    return Work("sampling", 0.0, tokens * m.vocab * passes, "vector")


# --- Non-GEMM work on the vector cores (AIV, or the SMs' CUDA cores): bandwidth-bound, per token ----------
# Bytes each op reads and writes in HBM, from the tensor shapes; the rate they reach is FITTED
# (calibration.VECTOR_BW_EFF) because the paper gives no figure for it.


def vector_attn(m: ModelConfig, tokens: float) -> Work:
    """Attention side of one layer for `tokens` tokens: input RMSNorm with per-token INT8 quantisation
    (read BF16, write INT8), q/kv latent RMSNorms, RoPE on q and k, quantisation of the attention output
    before O_proj, and the residual add (read two BF16 rows, write one)."""
    h = m.hidden
    norm_quant = 3 * h
    latent_norms = 2 * BF16_BYTES * (m.q_lora_rank + m.kv_lora_rank)
    rope = 2 * BF16_BYTES * m.qk_rope_dim * (m.num_heads + 1)
    out_quant = 3 * m.num_heads * m.v_head_dim
    residual = 3 * BF16_BYTES * h
    return Work(
        "vector_ops", 0.0, tokens * (norm_quant + latent_norms + rope + out_quant + residual), "vector"
    )


def vector_moe(m: ModelConfig, tokens: float, copies_in: float, copies_out: float, msg_bytes: int) -> Work:
    """MoE side of one layer: post-attention RMSNorm + quantisation and gate top-k for `tokens` tokens;
    for `copies_in` token copies received, unpacking the dispatched row and SwiGLU + re-quantisation
    between up and down projections; for `copies_out` copies sent, packing before dispatch and the
    weighted sum of the returned BF16 rows; then the residual add."""
    h, inter = m.hidden, m.expert_intermediate
    per_token = 3 * h + 4 * m.num_routed_experts + 3 * BF16_BYTES * h
    per_in = msg_bytes + 2 * BF16_BYTES * inter + inter
    per_out = msg_bytes + BF16_BYTES * h
    return Work("vector_ops", 0.0, tokens * per_token + copies_in * per_in + copies_out * per_out, "vector")


def vector_dense(m: ModelConfig, tokens: float, intermediate: int) -> Work:
    """Dense FFN side of one layer: RMSNorm + quantisation, SwiGLU + re-quantisation, residual add."""
    h = m.hidden
    return Work("vector_ops", 0.0, tokens * (3 * h + 5 * intermediate + 3 * BF16_BYTES * h), "vector")


def mla_down_prefill(m: ModelConfig, tokens: float, prec: Precision) -> Work:
    """SP stage of prefill MLA: q_a and kv_a down-projections of the die's own tokens."""
    down = mla_prolog_prefill(m, tokens, 0.0, 0.0, 0.0, prec)
    return Work("mla_prolog", down.flops, down.bytes, "gemm", prec)


def mla_up_prefill(m: ModelConfig, tokens: float, cached: float, head_frac: float, prec: Precision) -> Work:
    """TP stage of prefill MLA: q_b and kv_b up-projections of every new token (and the cached prefix's
    K/V) for the die's share of heads."""
    both = mla_prolog_prefill(m, 0.0, tokens, cached, head_frac, prec)
    down_weights = weight_bytes(q_a_params(m) + kv_a_params(m), prec)
    return Work("mla_prolog", both.flops, both.bytes - down_weights, "gemm", prec)
