"""`supernode bench --stack auto` (what `make load` runs) end to end: its results.json matches the
requests the workload generator sends for the same seed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from supernode.loadgen.bench import build_specs
from supernode.loadgen.scenarios import preset, run_points
from supernode.loadgen.stats import Deployment
from supernode.processes import free_port

pytestmark = pytest.mark.e2e
NUM_REQUESTS = 16


def test_short_load_run_reports_what_was_sent(tmp_path):
    reports = tmp_path / "reports"
    command = [
        sys.executable, "-m", "supernode.cli", "bench", "--scenario", "mixed",
        "--num-requests", str(NUM_REQUESTS), "--stack", "auto", "--target", f"127.0.0.1:{free_port()}",
        "--reports", str(reports),
        "--no-progress", "--no-plots", "--seed", "3",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "report:" in done.stdout
    (folder,) = reports.iterdir()
    results = json.loads((folder / "results.json").read_text())

    cfg = preset("mixed", Deployment(32, 1.0)).override(num_requests=NUM_REQUESTS, seed=3)
    specs = build_specs(cfg, run_points(cfg)[0])
    assert results["completed"] == NUM_REQUESTS and results["failed"] == 0
    assert results["total_input_tokens"] == sum(len(s.token_ids) for s in specs)
    assert results["total_output_tokens"] == sum(s.max_tokens for s in specs)
    assert 0 < results["cache_hit_rate"] < 1, "the sessions share prefixes and the pool served some"
    assert results["mean_ttft_ms"] > 0 and results["mean_tpot_ms"] > 0
    assert (folder / "summary.md").read_text().startswith("#")
