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


class _Refusing(FakeClient):
    """Every request fails (RESOURCE_EXHAUSTED)."""

    async def generate(self, prompt=None, *, token_ids=None, max_tokens=16, **kw):
        async for chunk in super().generate(
            prompt, token_ids=[999, *(token_ids or [])], max_tokens=max_tokens, **kw
        ):
            yield chunk


@pytest.mark.parametrize(("limit", "code"), [(None, 1), ("0.5", 1), ("1", 0)])
def test_bench_exits_non_zero_when_requests_fail_beyond_the_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, limit: str | None, code: int
) -> None:
    def refusing_target(address: str, scale: float, timeout_s: float) -> SdkTarget:
        return SdkTarget(address, scale, timeout_s, client_factory=lambda a, t: _Refusing(a))

    monkeypatch.setattr(cli, "SdkTarget", refusing_target)
    app = typer.Typer()
    cli.register(app)
    app.command("noop")(lambda: None)
    args = ["bench", "--scenario", "mixed", "--num-requests", "4", "--input-len", "16", "--output-len", "2"]
    args += ["--reports", str(tmp_path), "--no-plots", "--no-progress"]
    args += ["--max-failure-rate", limit] if limit is not None else []
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("custom-")  # overridden lengths: named by what it ran
    assert json.loads((folder / "results.json").read_text())["failed"] == 4
