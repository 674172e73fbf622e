"""The live engines and the model price a burst of partly cached prompts, and a full decode batch,
alike (virtual time, no lag)."""

from __future__ import annotations

import pytest

from benchmarks.fidelity_virtual import decode_scenario, scenario
from supernode.sim.loop import run_virtual


@pytest.mark.parametrize(("name", "reuse"), [("prefill-cache-50", 0.5), ("prefill-cache-90", 0.9)])
def test_cached_prefill_engine_agrees_with_the_model(name: str, reuse: float) -> None:
    rows = run_virtual(scenario(name, reuse, num_batches=2))  # the quick fidelity run: 128 prompts
    for row in rows:
        assert abs(row.error_pct) <= 5.0, row


def test_decode_engine_keeps_the_batch_full_and_agrees_with_the_model() -> None:
    """The closed loop of `make bench-fidelity` (a full batch waiting) holds 4 per die: the steady
    window's TPOT and throughput are the model's at batch 8 per NPU."""
    rows = run_virtual(decode_scenario("decode-b8-kv4k", 4, window_s=12.0))
    assert [row.metric for row in rows] == ["tpot_ms", "decode_tokens_per_s_per_npu"]
    for row in rows:
        assert abs(row.error_pct) <= 2.0, row
