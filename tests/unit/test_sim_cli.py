"""`supernode sim` from the command line: it takes `supernode bench`'s workload flags, meaning the same."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.main import get_command
from typer.testing import CliRunner

from supernode.cli import app
from supernode.loadgen.workload_flags import WorkloadFlags

SMALL = ["--prefill-instances", "2", "--prefill-npus", "16", "--decode-npus", "16"]


def test_sim_runs_a_workload_given_as_flags(tmp_path: Path):
    args = ["sim", *SMALL, "--num-requests", "6", "--request-rate", "8", "--input-len", "fixed:256"]
    args += ["--output-len", "fixed:5", "--seed", "3", "--reports", str(tmp_path)]
    args += ["--no-plots", "--no-progress"]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    (results_file,) = tmp_path.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert results["completed"] == 6 and results["failed"] == 0
    assert results["total_input_tokens"] == 6 * 256 and results["total_output_tokens"] == 6 * 5


def test_a_bad_workload_flag_is_refused_naming_it(tmp_path: Path):
    args = ["sim", *SMALL, "--input-len", "gaussian:5", "--reports", str(tmp_path), "--no-progress"]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert "input_len: length 'gaussian:5': kind must be one of fixed, uniform, lognormal" in said
    assert not list(tmp_path.iterdir())  # refused before anything ran


def _options(command: str) -> dict[str, str | None]:
    group = get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return {p.name: getattr(p, "help", None) for p in group.commands[command].params if p.name}


def test_bench_and_sim_share_every_workload_flag_with_one_help_text():
    bench, sim = _options("bench"), _options("sim")
    for name in WorkloadFlags.__dataclass_fields__:
        assert name in bench and name in sim, name
        assert bench[name] == sim[name] and bench[name], name
