from __future__ import annotations

import json
from pathlib import Path

import pytest
from cluster_target import run_on_cluster

from supernode.loadgen.scenarios import PRESETS, BenchConfig, preset, run_points, sweep_axis
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import run_folder, run_suite
from supernode.sim.target import InprocTarget

DEPLOY = Deployment(16, 2.0)
VLLM_FIELDS = (
    "completed", "total_input_tokens", "total_output_tokens", "request_throughput", "output_throughput",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "mean_e2el_ms", "request_goodput", "decode_tokens_per_s_per_npu",
)  # fmt: skip
SMALL = {"input_len": "32", "output_len": "4", "num_requests": 12}


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cfg: BenchConfig) -> tuple[Path, dict]:
    """One suite against the in-process cluster on virtual time (the real engines price every step)."""

    async def body(target: InprocTarget) -> Path:
        out = await run_suite(
            cfg, target, "inproc", DEPLOY, 1.0, run_folder(tmp_path, cfg.scenario),
            lambda shape: {"mean_tpot_ms": 1.0},
        )  # fmt: skip
        return out.folder

    folder = run_on_cluster(monkeypatch, body)
    return folder, json.loads((folder / "results.json").read_text())


def test_single_run_writes_flat_vllm_results_summary_and_plots(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = preset("mixed", DEPLOY).override(request_rates=(200.0,), **SMALL)
    folder, results = _run(monkeypatch, tmp_path, cfg)
    assert all(key in results for key in VLLM_FIELDS)
    assert results["completed"] == 12 and results["scenario"] == "custom"  # named by what it ran
    assert "sessions prompts" in results["description"] and "preset mixed" in results["description"]
    assert results["predicted"] == {"mean_tpot_ms": 1.0}
    assert results["request_goodput"] == pytest.approx(results["request_throughput"])
    summary = (folder / "summary.md").read_text()
    assert "| mean / p99 TTFT (ms) |" in summary and "Measured vs `supernode model`" in summary
    for name in ("latency_cdf.png", "timeline.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name})" in summary


def test_sweep_writes_runs_best_under_slo_and_sweep_plot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = preset("slo", DEPLOY).override(concurrencies=(1, 4), **SMALL)
    folder, results = _run(monkeypatch, tmp_path, cfg)
    assert results["sweep_axis"] == "concurrency"
    assert [r["label"] for r in results["runs"]] == ["c-1", "c-4"]
    assert all(key in run for run in results["runs"] for key in VLLM_FIELDS)
    assert [b["slo"] for b in results["best_under_slo"]] == ["tpot<=50ms", "tpot<=30ms", "tpot<=15ms"]
    assert results["best_under_slo"][2]["label"] == "c-4"
    assert (folder / "sweep.png").exists()


def test_report_warns_when_the_target_rate_is_not_achieved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = preset("mixed", DEPLOY).override(
        workload="synthetic", request_rates=(2000.0,), max_concurrency=1, **SMALL
    )  # fmt: skip
    folder, results = _run(monkeypatch, tmp_path, cfg)
    assert any("not achieved" in w for w in results["warnings"])
    assert "not achieved" in (folder / "summary.md").read_text()


def test_presets_build_points() -> None:
    for name in PRESETS:
        points = run_points(preset(name, DEPLOY))
        assert points and len({p.label for p in points}) == len(points)
    assert [p.concurrency for p in run_points(preset("slo", DEPLOY))] == [16, 32, 64, 128, 192]
    assert run_points(preset("decode", DEPLOY))[0].concurrency == 192
    assert [p.reuse_ratio for p in run_points(preset("cache", DEPLOY))] == [0.0, 0.5, 0.9]


def test_runs_are_named_by_what_they_ran() -> None:
    base = preset("mixed", DEPLOY)
    assert base.override(seed=9).scenario == "mixed"  # same traffic, another draw
    longer = base.override(num_requests=5000)  # the same traffic for longer
    assert longer.scenario == "mixed" and longer.description.endswith("(overrides: num_requests=5000)")
    custom = base.override(
        workload="synthetic", input_len="fixed:512", output_len="fixed:64", request_rates=(2.0,)
    )
    assert (custom.scenario, custom.preset) == ("custom", "mixed")
    assert custom.description.startswith("poisson arrivals at 2 req/s; synthetic prompts fixed:512 tokens")
    assert base.description not in custom.description


def test_override_and_sweep_rules() -> None:
    cfg = preset("mixed", DEPLOY)
    assert cfg.override(seed=None) is cfg
    changed = cfg.override(request_rates=(1.0, 2.0))
    assert "overrides: request_rates=1,2" in changed.description and sweep_axis(changed) == "request_rate"
    with pytest.raises(ValueError, match="one setting at a time"):
        sweep_axis(changed.override(reuse_ratios=(0.1, 0.2)))
    with pytest.raises(ValueError, match="unknown bench setting"):
        cfg.override(colour="red")
    with pytest.raises(ValueError, match="needs workload 'trace'"):
        run_points(cfg.override(arrival="trace"))
