"""bench-sim's agreement report: the host-time fit over the live time scales."""

from __future__ import annotations

import pytest

from benchmarks.sim_check import ttft_fit


def run(time_scale: float, live_ms: float, sim_ms: float = 60.0) -> dict[str, object]:
    row = {"metric": "mean_ttft_ms", "live": live_ms, "sim": sim_ms, "error_pct": 0.0}
    return {"time_scale": time_scale, "rows": [row]}


def test_gap_splits_into_host_wall_time_and_what_no_time_scale_removes():
    # 20 wall ms of host work per request and 1 ms of emulated gap: 1 + 20 x 0.25 = 6, 1 + 20 x 0.1 = 3
    fit = ttft_fit([run(0.25, 66.0), run(0.1, 63.0)])
    assert fit["w_wall_ms"] == pytest.approx(20.0)
    assert fit["c_ms"] == pytest.approx(1.0)
    assert fit["error_pct_at_0"] == pytest.approx(100 * (60 - 61) / 61)


def test_one_time_scale_gives_no_fit():
    assert ttft_fit([run(0.25, 66.0)]) == {}
    assert ttft_fit([run(0.25, 66.0), run(0.25, 65.0)]) == {}
