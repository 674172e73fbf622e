"""`supernode sim`: the bench's workloads on the in-process cluster, in virtual time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from supernode.core.tokens import TokenModel
from supernode.loadgen.bench import build_specs
from supernode.loadgen.scenarios import preset, run_points
from supernode.loadgen.stats import Deployment
from supernode.sim.deployment import SimDeployment, load_deployment
from supernode.sim.run import SimOptions, simulate

SMALL = SimDeployment(num_prefill=2, prefill_npus=16, num_decode=1, decode_npus=16)


def small_cfg(n: int = 24):
    return preset("mixed", Deployment(SMALL.num_prefill_npus, SMALL.num_decode_npus)).override(
        num_requests=n, request_rates=(8.0,), output_len="uniform:4:24", input_len="lognormal:300:0.5"
    )


def test_sim_writes_the_bench_files_and_its_own(tmp_path: Path):
    out = simulate(small_cfg(), SMALL, tmp_path, SimOptions(write_pngs=False))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["completed"] == 24 and results["failed"] == 0
    assert results["mean_ttft_ms"] > 0 and results["mean_tpot_ms"] > 0 and results["cache_hit_rate"] > 0
    sim = results["sim"]
    assert set(sim["instance_utilisation"]) == {"prefill-0", "prefill-1", "decode-0"}
    assert sim["instance_nodes"] == {"prefill-0": [0, 1], "prefill-1": [2, 3], "decode-0": [4, 5]}
    assert 0 < sim["instance_utilisation"]["decode-0"] <= 1
    assert sim["peak_decode_running"] >= 1 and sim["sim_requests_per_s"] > 0
    series = json.loads((tmp_path / "sim_series.json").read_text())
    assert len(series["t_s"]) >= 2 and max(series["router_inflight"]) >= 1
    assert "## Simulation" in (tmp_path / "summary.md").read_text()
    assert "| decode-0 |" in (tmp_path / "summary.md").read_text().split("| nodes |")[1]
    assert out.tokens == {}


def test_the_speed_figures_leave_out_writing_the_report(tmp_path: Path):
    started = time.perf_counter()
    out = simulate(small_cfg(8), SMALL, tmp_path, SimOptions(write_pngs=True))
    total_s = time.perf_counter() - started
    assert (tmp_path / "latency_cdf.png").exists() and out.suite.write_wall_s > 0
    assert 0 < out.sim["sim_wall_s"] <= total_s - out.suite.write_wall_s
    assert out.sim["sim_cpu_s"] > 0


def test_tokens_are_the_deterministic_ones_and_timing_does_not_depend_on_them(tmp_path: Path):
    cfg = small_cfg(12)
    full = simulate(cfg, SMALL, tmp_path / "a", SimOptions(materialise_tokens=True, write_pngs=False))
    counted = simulate(cfg, SMALL, tmp_path / "b", SimOptions(write_pngs=False, exact_steps=True))
    specs = build_specs(cfg, run_points(cfg)[0])
    for spec in specs:
        assert full.tokens[spec.request_id] == TokenModel(list(spec.token_ids), spec.seed).generate(
            spec.max_tokens
        )
    for key in ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_e2el_ms"):
        assert counted.suite.results[key] == pytest.approx(full.suite.results[key], rel=1e-9)


def test_until_drops_later_arrivals(tmp_path: Path):
    out = simulate(small_cfg(40), SMALL, tmp_path, SimOptions(until_s=1.0, write_pngs=False))
    assert 0 < out.suite.results["completed"] < 40


def test_deployment_file_names_unknown_keys(tmp_path: Path):
    path = tmp_path / "dep.yaml"
    path.write_text("prefill: {instances: 3, npus: 8}\ndecode: {npus: 32}\npool: {capacity_gb: 100}\n")
    dep = load_deployment(path)
    assert (dep.num_prefill, dep.prefill_npus, dep.decode_npus, dep.pool_gb) == (3, 8, 32, 100)
    path.write_text("decode: {dies: 4}\n")
    with pytest.raises(ValueError, match="decode.dies"):
        load_deployment(path)
    with pytest.raises(ValueError, match="decode.npus"):
        SimDeployment(decode_npus=1).settings()


def test_a_deployment_on_fewer_nodes_runs_and_one_too_small_for_its_dies_is_refused(tmp_path: Path):
    """The EMS pool spans the deployment's nodes: a cached prefix is read from, and new blocks stored
    to, CPUs that exist (a pool placed over the default 48 nodes failed every cache hit on 4)."""
    few = SimDeployment(num_prefill=2, prefill_npus=8, num_decode=1, decode_npus=16, num_nodes=4)
    out = simulate(small_cfg(), few, tmp_path, SimOptions(write_pngs=False))
    assert out.suite.results["failed"] == 0 and out.suite.results["cache_hit_rate"] > 0
    message = "nodes: 3 nodes hold 48 dies, the instances want 64; give at least 4"
    with pytest.raises(ValueError, match=message):
        SimDeployment(num_prefill=2, prefill_npus=8, num_decode=1, decode_npus=16, num_nodes=3).settings()
    with pytest.raises(ValueError, match="nodes: must be >= 1"):
        SimDeployment(num_nodes=0).settings()


def _figures(out) -> dict[str, float]:
    keys = ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "mean_e2el_ms", "duration")
    return {k: out.suite.results[k] for k in keys}


def test_runs_of_steps_agree_with_pricing_every_step(tmp_path: Path):
    """The fast path (decode runs of steps priced at their ends) against the exact one: the same
    steps, the same requests, the latencies within 0.01%."""
    cfg = small_cfg(60).override(output_len="lognormal:128:0.5")
    exact = simulate(cfg, SMALL, tmp_path / "a", SimOptions(write_pngs=False, exact_steps=True))
    fast = simulate(cfg, SMALL, tmp_path / "b", SimOptions(write_pngs=False))
    assert fast.sim["instance_steps"] == exact.sim["instance_steps"]
    assert fast.suite.results["completed"] == exact.suite.results["completed"] == 60
    for key, value in _figures(exact).items():
        assert _figures(fast)[key] == pytest.approx(value, rel=1e-4), key
    assert _figures(fast) != _figures(exact)  # the fast path did run steps together


def test_a_run_is_deterministic_per_seed(tmp_path: Path):
    cfg = small_cfg(30)
    a = simulate(cfg, SMALL, tmp_path / "a", SimOptions(write_pngs=False))
    b = simulate(cfg, SMALL, tmp_path / "b", SimOptions(write_pngs=False))
    c = simulate(cfg.override(seed=1), SMALL, tmp_path / "c", SimOptions(write_pngs=False))
    assert _figures(a) == _figures(b) and a.series == b.series
    assert _figures(a) != _figures(c)


def test_a_counted_decode_longer_than_the_routers_silence_bounds_completes(tmp_path: Path):
    """A counted sequence sends no chunk per step; it reports its tokens every emulated second, so a
    decode longer than the router's bounds on silence (120 s before the first chunk, 5 s between
    chunks) is not given up on as a frozen worker's, and ends as pricing every step ends it."""
    cfg = small_cfg(2).override(output_len="fixed:12000", request_rates=(1.0,))
    counted = simulate(cfg, SMALL, tmp_path / "a", SimOptions(write_pngs=False))
    exact = simulate(cfg, SMALL, tmp_path / "b", SimOptions(write_pngs=False, exact_steps=True))
    for out in (counted, exact):
        assert out.suite.results["completed"] == 2 and out.suite.results["failed"] == 0
        assert out.suite.results["mean_e2el_ms"] > 130_000  # longer than the first-chunk bound
    for key, value in _figures(exact).items():
        assert _figures(counted)[key] == pytest.approx(value, rel=1e-4), key
