from __future__ import annotations

import random

import numpy as np
import pytest
from loadgen_fakes import make_result

from supernode.loadgen.stats import Deployment, Slo, compute_metrics, goodput, make_slos, percentile

VLLM_FIELDS = (
    "completed", "total_input_tokens", "total_output_tokens", "request_throughput", "output_throughput",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "mean_e2el_ms", "request_goodput",
)  # fmt: skip


def test_percentile_interpolates_linearly_on_hand_made_samples() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_percentile_matches_numpy() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 1) for _ in range(257)]
    for q in (1, 50, 90, 99, 99.9):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, 101)


def test_goodput_counts_requests_meeting_every_bound() -> None:
    results = [
        make_result(100, 10),  # meets
        make_result(300, 10),  # TTFT too slow
        make_result(100, 40),  # TPOT too slow
        make_result(100, 10, is_ok=False),  # failed
        make_result(150, 999, num_out=1),  # one token: TPOT does not apply -> meets
    ]
    slo = Slo(ttft_ms=200, tpot_ms=20)
    assert goodput(results, slo, duration_s=2.0) == pytest.approx(1.0)
    assert goodput(results, Slo(tpot_ms=20), 2.0) == pytest.approx(1.5)
    assert goodput(results, slo, 0.0) == 0.0
    assert slo.label == "ttft<=200ms,tpot<=20ms"


def test_make_slos_one_per_tpot_bound() -> None:
    assert make_slos(2000, [50, 15]) == [Slo(2000, 50), Slo(2000, 15)]
    assert make_slos(None, []) == []
    assert make_slos(500, []) == [Slo(500, None)]


def test_compute_metrics_on_hand_made_results() -> None:
    results = [
        make_result(
            100, 10, num_out=11, num_in=1000, num_cached_tokens=500, has_cache_info=True, itl_s=[0.01, 0.03]
        ),
        make_result(300, 20, num_out=11, num_in=1000, num_cached_tokens=0, has_cache_info=True),
        make_result(is_ok=False, error_kind="RESOURCE_EXHAUSTED"),
        make_result(is_ok=False, error_kind="RESOURCE_EXHAUSTED"),
        make_result(is_ok=False, error_kind="TIMEOUT"),
    ]
    m = compute_metrics(results, 2.0, Deployment(4, 2.0), [Slo(200, 50)], mean_decode_batch=4.0)
    assert all(key in m for key in VLLM_FIELDS)
    assert (m["completed"], m["failed"]) == (2, 3)
    assert m["total_input_tokens"] == 2000 and m["total_output_tokens"] == 22
    assert m["request_throughput"] == pytest.approx(1.0)
    assert m["output_throughput"] == pytest.approx(11.0)
    assert m["mean_ttft_ms"] == pytest.approx(200) and m["median_ttft_ms"] == pytest.approx(200)
    assert m["p99_ttft_ms"] == pytest.approx(298)
    assert m["mean_tpot_ms"] == pytest.approx(15)
    assert m["mean_itl_ms"] == pytest.approx(20)
    assert m["mean_e2el_ms"] == pytest.approx((200 + 500) / 2)
    assert m["request_goodput"] == pytest.approx(0.5)
    assert m["cache_hit_rate"] == pytest.approx(0.25)
    assert m["errors"] == {"RESOURCE_EXHAUSTED": 2, "TIMEOUT": 1}
    assert m["prefill_tokens_per_s_per_npu"] == pytest.approx(2000 / 2 / 4)
    assert m["prefill_computed_tokens_per_s_per_npu"] == pytest.approx(1500 / 2 / 4)
    assert m["decode_tokens_per_s_per_npu"] == pytest.approx(22 / 2 / 2)
    assert m["mean_decode_batch_per_npu"] == pytest.approx(2.0)
    assert m["decode_steady_tokens_per_s_per_npu"] == pytest.approx(2.0 / 0.015)


def test_compute_metrics_without_slo_or_cache_info() -> None:
    m = compute_metrics([make_result()], 1.0, Deployment(1, 1.0))
    assert m["request_goodput"] is None and m["cache_hit_rate"] is None and m["goodput"] == {}


def test_itl_is_unmeasured_not_zero_when_no_gap_was_recorded() -> None:
    """A counting-only simulation keeps no inter-chunk gaps: its ITL is unknown, not 0 ms."""
    streams = [make_result(100, 10, num_out=11), make_result(300, 20, num_out=11)]
    m = compute_metrics(streams, 2.0, Deployment(4, 2.0))
    assert m["mean_itl_ms"] is None and m["p99_itl_ms"] is None and m["median_itl_ms"] is None
    assert m["mean_tpot_ms"] == pytest.approx(15)
    single = compute_metrics([make_result(100, 10, num_out=1)], 2.0, Deployment(4, 2.0))
    assert single["mean_itl_ms"] == 0.0  # one token each: no gap exists, as `vllm bench serve` says
