"""Metrics from request results, in emulated time. Pure.

Conventions follow `vllm bench serve`: percentiles interpolate linearly (numpy's default); TPOT counts
only requests with more than one output token; goodput counts requests meeting every SLO of a pair.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from supernode.loadgen.records import RequestResult

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), numpy's definition (linear interpolation); 0.0 when empty.

    The one percentile of the project: every report and the demo use it."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values, dtype=float), q))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def std(values: Sequence[float]) -> float:
    """Population standard deviation (numpy's default)."""
    if not values:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def latency_fields(name: str, values_s: Sequence[float]) -> dict[str, float]:
    """`mean_<name>_ms`, `median_`, `std_`, `p90_`, `p99_` from seconds."""
    ms = [v * 1000.0 for v in values_s]
    return {
        f"mean_{name}_ms": mean(ms),
        f"median_{name}_ms": percentile(ms, 50.0),
        f"std_{name}_ms": std(ms),
        f"p90_{name}_ms": percentile(ms, 90.0),
        f"p99_{name}_ms": percentile(ms, 99.0),
    }


@dataclass(frozen=True, slots=True)
class Slo:
    """A service-level objective; a request meets it when every set bound holds."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def label(self) -> str:
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"ttft<={self.ttft_ms:g}ms")
        if self.tpot_ms is not None:
            parts.append(f"tpot<={self.tpot_ms:g}ms")
        return ",".join(parts) or "none"

    def is_met(self, result: RequestResult) -> bool:
        if not result.is_ok:
            return False
        if self.ttft_ms is not None and result.ttft_s * 1000.0 > self.ttft_ms:
            return False
        tpot_ms = result.tpot_s * 1000.0 if result.num_output_tokens > 1 else 0.0
        return self.tpot_ms is None or tpot_ms <= self.tpot_ms


def make_slos(ttft_ms: float | None, tpot_ms: Iterable[float]) -> list[Slo]:
    """One SLO per TPOT bound (each with the TTFT bound); just the TTFT bound when no TPOT is given."""
    tpots = list(tpot_ms)
    if tpots:
        return [Slo(ttft_ms, t) for t in tpots]
    return [Slo(ttft_ms, None)] if ttft_ms is not None else []


def goodput(results: Iterable[RequestResult], slo: Slo, duration_s: float) -> float:
    """Requests per emulated second that finished and met `slo`."""
    if duration_s <= 0:
        return 0.0
    return sum(1 for r in results if slo.is_met(r)) / duration_s


def errors_by_kind(results: Iterable[RequestResult]) -> dict[str, int]:
    return dict(sorted(Counter(r.error_kind for r in results if not r.is_ok).items()))


@dataclass(frozen=True, slots=True)
class Deployment:
    num_prefill_npus: int  # NPUs serving prefill, across all prefill instances
    num_decode_npus: float  # NPUs serving decode (dies / 2), across all decode instances


def compute_metrics(
    results: Sequence[RequestResult],
    duration_s: float,
    deployment: Deployment,
    slos: Sequence[Slo] = (),
    mean_decode_batch: float = 0.0,
) -> dict[str, Any]:
    """The flat results object (vLLM names plus ours). `duration_s` is the run's emulated length."""
    ok = [r for r in results if r.is_ok]
    num_in = sum(r.num_prompt_tokens for r in ok)
    num_out = sum(r.num_output_tokens for r in ok)
    num_cached = sum(r.num_cached_tokens for r in ok)
    dur = duration_s if duration_s > 0 else math.inf
    metrics: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": num_in,
        "total_output_tokens": num_out,
        "total_cached_tokens": num_cached,
        "request_throughput": len(ok) / dur,
        "request_goodput": goodput(ok, slos[0], duration_s) if slos else None,
        "output_throughput": num_out / dur,
        "input_throughput": num_in / dur,
        "total_token_throughput": (num_in + num_out) / dur,
    }
    metrics.update(latency_fields("ttft", [r.ttft_s for r in ok]))
    metrics.update(latency_fields("tpot", [r.tpot_s for r in ok if r.num_output_tokens > 1]))
    itl_s = [x for r in ok for x in r.itl_s]
    if itl_s or not any(r.num_output_tokens > 1 for r in ok):
        metrics.update(latency_fields("itl", itl_s))
    else:  # streams of several tokens, no gap recorded (a counting-only simulation): not measured
        metrics.update(dict.fromkeys(latency_fields("itl", []), None))
    metrics.update(latency_fields("e2el", [r.e2e_s for r in ok]))
    has_cache = any(r.has_cache_info for r in ok)
    mean_tpot_s = mean([r.tpot_s for r in ok if r.num_output_tokens > 1])
    batch_per_npu = mean_decode_batch / deployment.num_decode_npus
    metrics.update(
        {
            "cache_hit_rate": num_cached / num_in if has_cache and num_in else None,
            "goodput": {s.label: goodput(ok, s, duration_s) for s in slos},
            "slo_attainment": {s.label: _fraction(ok, results, s) for s in slos},
            "errors": errors_by_kind(results),
            "num_prefill_npus": deployment.num_prefill_npus,
            "num_decode_npus": deployment.num_decode_npus,
            "prefill_tokens_per_s_per_npu": num_in / dur / deployment.num_prefill_npus,
            "prefill_computed_tokens_per_s_per_npu": (num_in - num_cached)
            / dur
            / deployment.num_prefill_npus,
            "decode_tokens_per_s_per_npu": num_out / dur / deployment.num_decode_npus,
            "mean_decode_batch_per_npu": batch_per_npu,
            "decode_steady_tokens_per_s_per_npu": batch_per_npu / mean_tpot_s if mean_tpot_s > 0 else 0.0,
        }
    )
    return metrics


def _fraction(ok: Sequence[RequestResult], results: Sequence[RequestResult], slo: Slo) -> float:
    return sum(1 for r in ok if slo.is_met(r)) / len(results) if results else 0.0
