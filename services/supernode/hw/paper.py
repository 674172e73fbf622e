"""The paper's results next to the model's, as rows: the headline rows (reference §4) and the per-layer
decode latencies (reference §3.7). These are the training rows of the FITTED constants."""

from __future__ import annotations

from dataclasses import dataclass, replace

from supernode.hw.cost import (
    decode_tokens_per_s_per_npu,
    max_batch_per_die_for_tpot,
    prefill_tokens_per_s_per_npu,
    tpot_ms,
)
from supernode.hw.decode import moe_layer_us
from supernode.hw.specs import (
    SHIPPED,
    DecodeDeployment,
    PrefillDeployment,
    Tuning,
    paper_decode,
    paper_prefill,
)

KV_LEN = 4096


@dataclass(frozen=True, slots=True)
class PaperRow:
    name: str
    paper: float
    model: float
    unit: str

    @property
    def error_pct(self) -> float:
        return (self.model - self.paper) / self.paper * 100.0


def deployments(tune: Tuning = SHIPPED) -> tuple[PrefillDeployment, PrefillDeployment, DecodeDeployment]:
    """(prefill perfect EPLB, prefill default EPLB, decode) as in the paper, with these fitted constants."""
    pre = replace(paper_prefill(), tuning=tune)
    return (
        pre,
        replace(pre, expert_imbalance=tune.default_eplb_hot_factor),
        replace(paper_decode(), tuning=tune),
    )


def prefill_rows(tune: Tuning = SHIPPED) -> list[PaperRow]:
    pre, default, _ = deployments(tune)
    return [
        PaperRow("prefill, perfect EPLB", 6688, prefill_tokens_per_s_per_npu(pre), "tokens/s/NPU"),
        PaperRow("prefill, default EPLB", 5655, prefill_tokens_per_s_per_npu(default), "tokens/s/NPU"),
    ]


def decode_rows(tune: Tuning = SHIPPED) -> list[PaperRow]:
    """Decode rows: [v3] Table 3 (96/NPU, 4K), Table 4 (8/NPU), and the §5.4.2 per-layer latencies,
    which the paper measured in its two-microbatch pipeline (so priced in that mode)."""
    _, _, dec = deployments(tune)
    no_mtp = replace(dec, mtp_depth=0)
    tps, kv = "tokens/s/NPU", KV_LEN
    return [
        PaperRow("decode batch 96/NPU, 4K KV: TPOT", 49.4, tpot_ms(dec, 48, kv), "ms"),
        PaperRow(
            "decode batch 96/NPU, 4K KV: throughput", 1943, decode_tokens_per_s_per_npu(dec, 48, kv), tps
        ),
        PaperRow("decode batch 8/NPU: TPOT", 14.9, tpot_ms(dec, 4, kv), "ms"),
        PaperRow("decode batch 8/NPU: throughput", 538, decode_tokens_per_s_per_npu(dec, 4, kv), tps),
        PaperRow(
            "decode MoE layer, 96/NPU, 4K, no MTP", 874, moe_layer_us(no_mtp, 48, kv, True).total_us, "us"
        ),
        PaperRow("decode MoE layer, 96/NPU, 4K, MTP", 1260, moe_layer_us(dec, 48, kv, True).total_us, "us"),
    ]


def paper_rows(tune: Tuning = SHIPPED) -> list[PaperRow]:
    """Every training row, then the SLO rows the issue asks the model to answer."""
    _, _, dec = deployments(tune)
    slo15 = max_batch_per_die_for_tpot(dec, KV_LEN, 15.0) * dec.dies_per_npu
    slo50 = max_batch_per_die_for_tpot(dec, KV_LEN, 50.0) * dec.dies_per_npu
    return [
        *prefill_rows(tune),
        *decode_rows(tune),
        PaperRow("decode 15 ms SLO: batch per NPU", 8, slo15, "sequences"),
        PaperRow("decode 50 ms SLO: batch per NPU", 96, slo50, "sequences"),
    ]
