"""The live engines and the model price a burst of partly cached prompts alike (virtual time, no lag)."""

from __future__ import annotations

import pytest

from benchmarks.fidelity_virtual import scenario
from supernode.sim.loop import run_virtual


@pytest.mark.parametrize(("name", "reuse"), [("prefill-cache-50", 0.5), ("prefill-cache-90", 0.9)])
def test_cached_prefill_engine_agrees_with_the_model(name: str, reuse: float) -> None:
    rows = run_virtual(scenario(name, reuse, num_batches=2))  # the quick fidelity run: 128 prompts
    for row in rows:
        assert abs(row.error_pct) <= 5.0, row
