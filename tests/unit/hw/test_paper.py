"""The paper's training rows (reference §4 and §3.7) against the model: every one within +-5%, and the
model's own SLO search lands on the paper's batches."""

from __future__ import annotations

import pytest

from supernode.hw.paper import PaperRow, paper_rows

TOLERANCE_PCT = 5.0
SLO_TOLERANCE = {"decode 15 ms SLO: batch per NPU": 1, "decode 50 ms SLO: batch per NPU": 8}
ROWS = paper_rows()


@pytest.mark.parametrize("name", [r.name for r in ROWS if r.name not in SLO_TOLERANCE])
def test_row_within_tolerance(name: str) -> None:
    row = next(r for r in ROWS if r.name == name)
    assert abs(row.error_pct) <= TOLERANCE_PCT, f"{name}: model {row.model:.1f} vs paper {row.paper}"


@pytest.mark.parametrize("name", sorted(SLO_TOLERANCE))
def test_slo_batch_within_tolerance(name: str) -> None:
    row = next(r for r in ROWS if r.name == name)
    assert abs(row.model - row.paper) <= SLO_TOLERANCE[name], f"{name}: model {row.model} vs {row.paper}"


def test_rows_have_units_and_positive_values() -> None:
    assert len(ROWS) == 10
    for row in ROWS:
        assert isinstance(row, PaperRow) and row.paper > 0 and row.model > 0 and row.unit
