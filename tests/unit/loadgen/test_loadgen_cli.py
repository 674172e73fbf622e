from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from loadgen_fakes import FakeClient
from typer.testing import CliRunner

from supernode.loadgen import cli
from supernode.loadgen.targets import SdkTarget


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    def fake_target(address: str, scale: float, timeout_s: float) -> SdkTarget:
        return SdkTarget(address, scale, timeout_s, client_factory=lambda a, t: FakeClient(a))

    monkeypatch.setattr(cli, "SdkTarget", fake_target)
    app = typer.Typer()
    cli.register(app, predictor=lambda shape: {"mean_ttft_ms": 50.0})

    @app.command("noop")
    def noop() -> None:  # a second command keeps `bench` a named subcommand
        return None

    return app


def test_bench_command_runs_a_scenario_and_prints_the_report(app: typer.Typer, tmp_path: Path) -> None:
    args = ["bench", "--scenario", "cache", "--reuse", "0,0.5", "--num-requests", "8", "--input-len", "64"]
    args += [
        "--output-len",
        "4",
        "--reports",
        str(tmp_path),
        "--no-plots",
        "--no-progress",
        "--time-scale",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "report: " in result.output and "model 50.00" in result.output
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["sweep_axis"] == "reuse_ratio" and results["time_scale"] == 2.0
    assert results["runs"][1]["cache_hit_rate"] == pytest.approx(0.25)


def test_bench_rejects_bad_flags(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--scenario", "nope", "--reports", str(tmp_path)])
    assert result.exit_code != 0 and "unknown scenario" in result.output
