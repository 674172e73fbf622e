"""Run-folder outputs: `results.json` (vLLM `bench serve` names plus ours) and `summary.md`.

One run point: results.json is the flat object. A sweep: `{"scenario", "sweep_axis", "runs": [flat...],
"best_under_slo": [...]}`. The same rows feed the Markdown summary and the console table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supernode.loadgen.bench import PointReport

# (label, results key, format): the rows of the summary tables.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("completed / failed", "completed", "{:d}"),
    ("sent rate (req/s)", "achieved_request_rate", "{:.2f}"),
    ("request throughput (req/s)", "request_throughput", "{:.2f}"),
    ("output throughput (tok/s)", "output_throughput", "{:.0f}"),
    ("mean / p99 TTFT (ms)", "mean_ttft_ms", "{:.1f}"),
    ("median TTFT (ms)", "median_ttft_ms", "{:.1f}"),
    ("mean / p99 TPOT (ms)", "mean_tpot_ms", "{:.2f}"),
    ("median TPOT (ms)", "median_tpot_ms", "{:.2f}"),
    ("mean ITL (ms)", "mean_itl_ms", "{:.2f}"),
    ("mean / p99 E2E (ms)", "mean_e2el_ms", "{:.0f}"),
    ("cache hit rate", "cache_hit_rate", "{:.1%}"),
    ("prefill tok/s per NPU", "prefill_tokens_per_s_per_npu", "{:.0f}"),
    ("decode tok/s per NPU", "decode_tokens_per_s_per_npu", "{:.0f}"),
    ("decode batch per NPU", "mean_decode_batch_per_npu", "{:.1f}"),
    ("decode batch/TPOT per NPU", "decode_steady_tokens_per_s_per_npu", "{:.0f}"),
)
_PAIRED = {"completed": "failed", "mean_ttft_ms": "p99_ttft_ms", "mean_tpot_ms": "p99_tpot_ms"}
_PAIRED["mean_e2el_ms"] = "p99_e2el_ms"


def fmt(value: object, pattern: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def summary_rows(reports: Sequence[PointReport]) -> list[tuple[str, list[str]]]:
    """(row label, one cell per run point) for the summary table."""
    rows: list[tuple[str, list[str]]] = []
    for label, key, pattern in ROWS:
        cells = []
        for rep in reports:
            cell = fmt(rep.metrics.get(key), pattern)
            if key in _PAIRED:
                cell += " / " + fmt(rep.metrics.get(_PAIRED[key]), pattern)
            cells.append(cell)
        rows.append((label, cells))
    for slo in reports[0].metrics.get("goodput") or {} if reports else {}:
        cells = [
            fmt(_goodput(rep, slo), "{:.2f}") + f" ({fmt(_attained(rep, slo), '{:.0%}')})" for rep in reports
        ]
        rows.append((f"goodput {slo} (req/s, share)", cells))
    return rows


def _goodput(rep: PointReport, slo: str) -> object:
    return (rep.metrics.get("goodput") or {}).get(slo)


def _attained(rep: PointReport, slo: str) -> object:
    return (rep.metrics.get("slo_attainment") or {}).get(slo)


def best_under_slo(
    reports: Sequence[PointReport], slos: Sequence[tuple[str, float | None, float | None]]
) -> list:
    """Per SLO (label, ttft_ms, tpot_ms): the point with the most decode tok/s/NPU whose means meet it."""
    best: list[dict[str, Any]] = []
    for label, ttft_ms, tpot_ms in slos:
        ok = [
            r
            for r in reports
            if r.metrics["completed"]
            and (tpot_ms is None or float(r.metrics["mean_tpot_ms"]) <= tpot_ms)
            and (ttft_ms is None or float(r.metrics["mean_ttft_ms"]) <= ttft_ms)
        ]
        top = max(ok, key=lambda r: float(r.metrics["decode_steady_tokens_per_s_per_npu"]), default=None)
        best.append({"slo": label, "label": top.point.label if top else None} | _best_fields(top))
    return best


def _best_fields(rep: PointReport | None) -> dict[str, Any]:
    keys = ("mean_decode_batch_per_npu", "mean_tpot_ms", "decode_steady_tokens_per_s_per_npu", "mean_ttft_ms")
    return {k: rep.metrics.get(k) if rep else None for k in keys}


def results_object(reports: Sequence[PointReport], header: Mapping[str, Any], axis: str | None) -> dict:
    if len(reports) == 1:
        return dict(header) | reports[0].metrics
    return dict(header) | {"sweep_axis": axis, "runs": [r.metrics for r in reports]}


def write_results(folder: Path, obj: Mapping[str, Any]) -> Path:
    path = folder / "results.json"
    path.write_text(json.dumps(obj, indent=2, default=_jsonable, allow_nan=False) + "\n")
    return path


def _jsonable(value: object) -> object:
    return str(value)


def clean(obj: Any) -> Any:
    """Replace NaN/inf (not JSON) with None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def markdown_summary(
    reports: Sequence[PointReport],
    header: Mapping[str, Any],
    best: Sequence[Mapping[str, Any]],
    plots: Sequence[str],
) -> str:
    lines = [f"# Load test: {header['scenario']}", "", str(header.get("description", "")), ""]
    lines.append(
        f"Target: {header['target']} · deployment: {header['num_prefill_npus']} prefill NPU(s), "
        f"{header['num_decode_npus']:g} decode NPU(s) · time scale {header['time_scale']:g} · "
        f"seed {header['seed']} · {header['started_at']}. All times are emulated."
    )
    lines += ["", "| metric | " + " | ".join(r.point.label for r in reports) + " |"]
    lines.append("|---" * (len(reports) + 1) + "|")
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in summary_rows(reports)]
    lines += _predicted_section(reports) + _best_section(best) + _notes_section(reports)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _predicted_section(reports: Sequence[PointReport]) -> list[str]:
    rows = [
        f"| {r.point.label} | {k} | {fmt(r.metrics.get(k))} | {fmt(v)} |"
        for r in reports
        for k, v in r.predicted.items()
    ]
    if not rows:
        return []
    return [
        "",
        "## Measured vs `supernode model`",
        "",
        "| run | figure | measured | predicted |",
        "|---|---|---|---|",
    ] + rows


def _best_section(best: Sequence[Mapping[str, Any]]) -> list[str]:
    if not best:
        return []
    out = ["", "## Best point under each SLO (means)", ""]
    out += [
        "| SLO | run | decode batch/NPU | mean TPOT (ms) | decode tok/s/NPU | mean TTFT (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for b in best:
        out.append(
            f"| {b['slo']} | {b['label'] or 'none met'} | {fmt(b['mean_decode_batch_per_npu'], '{:.1f}')} | "
            f"{fmt(b['mean_tpot_ms'])} | {fmt(b['decode_steady_tokens_per_s_per_npu'], '{:.0f}')} | "
            f"{fmt(b['mean_ttft_ms'], '{:.0f}')} |"
        )
    return out


def _notes_section(reports: Sequence[PointReport]) -> list[str]:
    notes = [f"- **{r.point.label}**: {w}" for r in reports for w in r.metrics.get("warnings") or []]
    errors = [f"- **{r.point.label}**: {r.metrics['errors']}" for r in reports if r.metrics.get("errors")]
    out = (["", "## Warnings", ""] + notes) if notes else []
    return out + ((["", "## Errors by kind", ""] + errors) if errors else [])
