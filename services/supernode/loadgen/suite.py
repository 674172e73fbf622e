"""Runs every point of a `BenchConfig` against one target and writes the run folder.

Folder: `<reports>/<scenario>-<UTC timestamp>/` with results.json, summary.md and the PNG plots.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from supernode.loadgen import plots, report
from supernode.loadgen.bench import PointReport, Predictor, run_point
from supernode.loadgen.records import RequestResult
from supernode.loadgen.scenarios import BenchConfig, RunPoint, run_points, sweep_axis
from supernode.loadgen.stats import Deployment, make_slos
from supernode.loadgen.targets import Target


class Progress(Protocol):
    def start(self, point: RunPoint, num_requests: int) -> None: ...

    def advance(self, result: RequestResult) -> None: ...


class _Silent:
    def start(self, point: RunPoint, num_requests: int) -> None:
        return None

    def advance(self, result: RequestResult) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SuiteOutcome:
    folder: Path
    reports: list[PointReport]
    results: dict[str, Any]  # what results.json holds
    best_under_slo: list[dict[str, Any]]
    write_wall_s: float = 0.0  # spent writing results.json, summary.md and the plots (wall, CPU)
    write_cpu_s: float = 0.0


def failure_rate(outcome: SuiteOutcome) -> float:
    """Failed requests over requests sent, across every run point (0.0 when none were sent)."""
    sent = sum(len(rep.results) for rep in outcome.reports)
    failed = sum(1 for rep in outcome.reports for r in rep.results if not r.is_ok)
    return failed / sent if sent else 0.0


def run_folder(root: Path, scenario: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    folder = root / f"{scenario}-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = root / f"{scenario}-{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def _header(cfg: BenchConfig, target: str, deployment: Deployment, time_scale: float) -> dict[str, Any]:
    return {
        "scenario": cfg.scenario,
        "description": cfg.description,
        "target": target,
        "num_prefill_npus": deployment.num_prefill_npus,
        "num_decode_npus": deployment.num_decode_npus,
        "time_scale": time_scale,
        "seed": cfg.seed,
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "config": asdict(cfg),
    }


async def run_suite(
    cfg: BenchConfig,
    target: Target,
    target_label: str,
    deployment: Deployment,
    time_scale: float,
    folder: Path,
    predictor: Predictor | None = None,
    progress: Progress | None = None,
    write_pngs: bool = True,
) -> SuiteOutcome:
    """Run each point in turn, then write results.json, summary.md and the plots into `folder`."""
    sink = progress or _Silent()
    header = _header(cfg, target_label, deployment, time_scale)
    reports: list[PointReport] = []
    for point in run_points(cfg):
        reports.append(
            await run_point(
                cfg, point, target, deployment, time_scale, sink.advance, predictor,
                on_start=partial(sink.start, point),
            )
        )  # fmt: skip
    axis = sweep_axis(cfg)
    slos = make_slos(cfg.slo_ttft_ms, cfg.slo_tpot_ms)
    best = report.best_under_slo(reports, [(s.label, s.ttft_ms, s.tpot_ms) for s in slos]) if axis else []
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    results = report.clean(report.results_object(reports, header, axis))
    if best:
        results["best_under_slo"] = report.clean(best)
    report.write_results(folder, results)
    names = plots.write_plots(reports, slos, axis, folder) if write_pngs else []
    (folder / "summary.md").write_text(report.markdown_summary(reports, header, best, names))
    wall_s, cpu_s = time.perf_counter() - wall_start, time.process_time() - cpu_start
    return SuiteOutcome(folder, reports, results, best, wall_s, cpu_s)
