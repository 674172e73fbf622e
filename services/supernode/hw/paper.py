"""The paper's headline results (reference §4) next to the model's, as rows."""

from __future__ import annotations

from dataclasses import dataclass, replace

from supernode.hw import calibration as cal
from supernode.hw.cost import (
    decode_tokens_per_s_per_npu,
    max_batch_per_die_for_tpot,
    prefill_tokens_per_s_per_npu,
    tpot_ms,
)
from supernode.hw.specs import paper_decode, paper_prefill


@dataclass(frozen=True, slots=True)
class PaperRow:
    name: str
    paper: float
    model: float
    unit: str

    @property
    def error_pct(self) -> float:
        return (self.model - self.paper) / self.paper * 100.0


def paper_rows() -> list[PaperRow]:
    """Headline rows: prefill [v3] Table 2, decode Table 3 (batch 96/NPU, 4K KV) and Table 4 (15 ms SLO)."""
    pre = paper_prefill()
    dec = paper_decode()
    default = replace(pre, expert_imbalance=cal.DEFAULT_EPLB_IMBALANCE.value)
    slo_batch = max_batch_per_die_for_tpot(dec, 4096, 15.0) * dec.dies_per_npu
    return [
        PaperRow("prefill, perfect EPLB", 6688, prefill_tokens_per_s_per_npu(pre), "tokens/s/NPU"),
        PaperRow("prefill, default EPLB", 5655, prefill_tokens_per_s_per_npu(default), "tokens/s/NPU"),
        PaperRow("decode batch 96/NPU, 4K KV: TPOT", 49.4, tpot_ms(dec, 48, 4096), "ms"),
        PaperRow("decode batch 96/NPU, 4K KV: throughput", 1943, decode_tokens_per_s_per_npu(dec, 48, 4096),
                 "tokens/s/NPU"),
        PaperRow("decode batch 8/NPU: TPOT", 14.9, tpot_ms(dec, 4, 4096), "ms"),
        PaperRow("decode batch 8/NPU: throughput", 538, decode_tokens_per_s_per_npu(dec, 4, 4096),
                 "tokens/s/NPU"),
        PaperRow("decode 15 ms SLO: batch per NPU", 8, slo_batch, "sequences"),
    ]  # fmt: skip
