"""Runs a `BenchConfig` against a target: build each point's workload, run it, compute its metrics.

The model hook: `predictor(shape)` returns figures under the same names as the results (for example
`mean_tpot_ms`, `decode_tokens_per_s_per_npu`); they are reported next to what was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from supernode.loadgen import arrivals, workloads
from supernode.loadgen.lengths import parse_length
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.runner import LoadPlan, RunOutcome, run_load
from supernode.loadgen.scenarios import BenchConfig, RunPoint
from supernode.loadgen.stats import Deployment, compute_metrics, make_slos
from supernode.loadgen.targets import Target
from supernode.loadgen.timeline import Timeline, build_timeline, mean_decode_batch
from supernode.loadgen.trace import parse_trace, trace_requests

RATE_TOLERANCE = 0.9  # warn when fewer than this share of the target rate was sent


@dataclass(frozen=True, slots=True)
class WorkloadShape:
    """What a cost model needs to predict a run point (emulated units)."""

    mean_input_tokens: float
    mean_output_tokens: float
    cache_hit_rate: float  # measured share of prompt tokens served from the pool
    request_rate: float  # requests per emulated second actually sent
    concurrency: int  # closed loop workers (0 in open loop)
    mean_decode_batch_per_npu: float
    num_prefill_npus: int
    num_decode_npus: float


Predictor = Callable[[WorkloadShape], Mapping[str, float]]


@dataclass(slots=True)
class PointReport:
    point: RunPoint
    metrics: dict[str, Any]  # the flat results object (JSON-ready)
    timeline: Timeline
    results: list[RequestResult]
    predicted: dict[str, float] = field(default_factory=dict)


def build_specs(cfg: BenchConfig, point: RunPoint) -> list[RequestSpec]:
    """The workload of one run point (pure: reads the trace file only for trace workloads)."""
    if cfg.workload == "trace":
        lines = Path(cfg.trace_path).read_text().splitlines()
        specs = trace_requests(parse_trace(lines), cfg.seed, cfg.trace_speedup, point.num_requests or None)
        if cfg.arrival == "closed":
            specs = [replace(s, arrival_s=0.0) for s in specs]
        return specs
    if point.num_requests < 1:
        raise ValueError("num_requests must be >= 1 for synthetic and session workloads")
    offsets = arrivals.make_arrivals(
        cfg.arrival, point.num_requests, point.request_rate, cfg.seed, cfg.burstiness
    )
    inp, out = parse_length(cfg.input_len), parse_length(cfg.output_len)
    if cfg.workload == "sessions":
        return workloads.sessions(
            offsets, inp, out, point.reuse_ratio, cfg.seed, cfg.turns_per_session, cfg.sessions_in_flight,
            label=point.label,
        )  # fmt: skip
    return workloads.synthetic(offsets, inp, out, cfg.seed, label=point.label)


def target_rate(specs: Sequence[RequestSpec]) -> float | None:
    """Requests per emulated second the arrivals ask for (None when all are due at once)."""
    span = max((s.arrival_s for s in specs), default=0.0) - min((s.arrival_s for s in specs), default=0.0)
    return (len(specs) - 1) / span if span > 0 and len(specs) > 1 else None


def rate_warning(wanted: float | None, outcome: RunOutcome, time_scale: float, has_sessions: bool) -> str:
    """A warning when the sent rate fell short of the arrivals' rate, else ''."""
    achieved = outcome.achieved_rate_wall * time_scale
    if wanted is None or achieved >= RATE_TOLERANCE * wanted:
        return ""
    why = "session turns wait for earlier turns" if has_sessions else "the target or the generator lagged"
    return (
        f"target rate {wanted:.2f} req/s not achieved: sent {achieved:.2f} req/s "
        f"(p99 send lag {outcome.p99_send_lag_ms:.1f} ms wall; {why})"
    )


def _run_fields(
    cfg: BenchConfig, point: RunPoint, wanted: float | None, outcome: RunOutcome, scale: float
) -> dict:
    return {
        "scenario": cfg.scenario,
        "label": point.label,
        "arrival": cfg.arrival,
        "workload": cfg.workload,
        "request_rate": point.request_rate,  # configured, req/s (None in closed loop and trace replay)
        "offered_request_rate": wanted,  # what the drawn arrivals ask for
        "achieved_request_rate": outcome.achieved_rate_wall * scale if len(outcome.results) > 1 else None,
        "burstiness": cfg.burstiness,
        "max_concurrency": point.concurrency or None,
        "reuse_ratio": point.reuse_ratio if cfg.workload == "sessions" else None,
        "input_len": cfg.input_len if cfg.workload != "trace" else "trace",
        "output_len": cfg.output_len if cfg.workload != "trace" else "trace",
        "num_prompts": len(outcome.results),
        "seed": cfg.seed,
        "time_scale": scale,
        "p99_send_lag_ms": outcome.p99_send_lag_ms,
    }


def requested_tokens(specs: Sequence[RequestSpec], results: Sequence[RequestResult]) -> dict[str, int]:
    """Prompt tokens the completed requests were built with, next to `total_input_tokens` (what the
    server counted): they agree when the server tokenizes as the workload's tokens were rendered."""
    by_id = {s.request_id: s for s in specs}
    done = [by_id[r.request_id] for r in results if r.is_ok and r.request_id in by_id]
    return {"total_requested_input_tokens": sum(len(s.token_ids) for s in done)}


def _shape(metrics: Mapping[str, object], point: RunPoint) -> WorkloadShape:
    def num(key: str) -> float:
        value = metrics.get(key)
        return float(value) if isinstance(value, int | float) else 0.0

    done = max(1.0, num("completed"))
    return WorkloadShape(
        num("total_input_tokens") / done, num("total_output_tokens") / done, num("cache_hit_rate"),
        num("achieved_request_rate"), point.concurrency, num("mean_decode_batch_per_npu"),
        int(num("num_prefill_npus")), num("num_decode_npus"),
    )  # fmt: skip


async def run_point(
    cfg: BenchConfig,
    point: RunPoint,
    target: Target,
    deployment: Deployment,
    time_scale: float,
    on_done: Callable[[RequestResult], None] = lambda _: None,
    predictor: Predictor | None = None,
    on_start: Callable[[int], None] = lambda _: None,
) -> PointReport:
    """Build the point's workload, send it (`on_start(num_requests)` first) and compute its metrics."""
    specs = build_specs(cfg, point)
    on_start(len(specs))
    plan = LoadPlan(cfg.arrival == "closed", point.concurrency, time_scale)
    outcome = await run_load(target, specs, plan, on_done)
    wanted = None if plan.is_closed_loop else target_rate(specs)
    batch = mean_decode_batch(outcome.results)
    slos = make_slos(cfg.slo_ttft_ms, cfg.slo_tpot_ms)
    metrics = _run_fields(cfg, point, wanted, outcome, time_scale)
    metrics.update(
        compute_metrics(outcome.results, outcome.wall_duration_s * time_scale, deployment, slos, batch)
    )
    metrics.update(requested_tokens(specs, outcome.results))
    warnings = [w for w in (rate_warning(wanted, outcome, time_scale, cfg.workload == "sessions"),) if w]
    if metrics["failed"]:
        warnings.append(f"{metrics['failed']} request(s) failed: {metrics['errors']}")
    metrics["warnings"] = warnings
    predicted = dict(predictor(_shape(metrics, point))) if predictor else {}
    metrics["predicted"] = predicted or None
    return PointReport(
        point, metrics, build_timeline(outcome.results, time_scale), outcome.results, predicted
    )
