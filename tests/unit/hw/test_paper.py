"""The paper's headline rows (reference §4) against the model: the target is +-5%.

Rows the model misses are xfail with the reason; nothing is tuned to close them.
"""

from __future__ import annotations

import pytest

from supernode.hw.paper import PaperRow, paper_rows

TOLERANCE_PCT = 5.0
MISSES = {
    "prefill, perfect EPLB": "with the overlap of [v3] §4.3.2 the op-level roofline is comm-bound at "
    "~1.5 s per batch; the paper's 2.45 s implies ~37% MFU, losses the per-op measurements do not carry",
    "prefill, default EPLB": "same as perfect EPLB, plus the imbalance only slows the MoE part",
    "decode batch 96/NPU, 4K KV: TPOT": "model omits per-kernel scheduling gaps and stream sync waits",
    "decode batch 96/NPU, 4K KV: throughput": "model omits per-kernel scheduling gaps and stream sync waits",
    "decode batch 8/NPU: TPOT": "microbatching reads weights twice at a core share of HBM bandwidth; "
    "without it the model is 25% fast",
    "decode batch 8/NPU: throughput": "as for the batch-8 TPOT",
    "decode 15 ms SLO: batch per NPU": "as for the batch-8 TPOT",
}


def _rows() -> list[PaperRow]:
    return paper_rows()


@pytest.mark.parametrize("name", [r.name for r in _rows()])
def test_row_within_tolerance(name: str, request: pytest.FixtureRequest) -> None:
    row = next(r for r in _rows() if r.name == name)
    if name in MISSES:
        request.applymarker(pytest.mark.xfail(reason=MISSES[name], strict=True))
    assert abs(row.error_pct) <= TOLERANCE_PCT, f"{name}: model {row.model:.1f} vs paper {row.paper}"


def test_rows_have_units_and_positive_values() -> None:
    for row in _rows():
        assert row.paper > 0 and row.model > 0 and row.unit
