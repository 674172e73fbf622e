"""`BenchConfig`, the named `--scenario` presets, and the expansion of a config into run points. Pure.

Presets scale with the deployment's NPU counts where the paper states a per-NPU operating point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from supernode.loadgen.lengths import parse_length
from supernode.loadgen.stats import Deployment

SAMPLE_TRACE = str(Path(__file__).parent / "traces" / "sample_mooncake.jsonl")
ARRIVALS = ("poisson", "constant", "closed", "trace")
WORKLOADS = ("synthetic", "sessions", "trace")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    scenario: str = "custom"
    description: str = ""
    arrival: str = "poisson"  # poisson | constant | closed | trace (the trace's own timestamps)
    request_rates: tuple[float, ...] = (4.0,)  # requests per emulated second (open loop); >1 value = sweep
    burstiness: float = 1.0  # gamma shape of Poisson gaps (1 = Poisson, <1 burstier)
    concurrencies: tuple[int, ...] = (16,)  # closed loop workers; >1 value = sweep
    max_concurrency: int = 0  # open loop cap on requests in flight (0 = none)
    num_requests: int = 200  # per run point; 0 = auto (closed loop: 2 x concurrency, at least 32)
    workload: str = "synthetic"  # synthetic | sessions | trace
    input_len: str = "lognormal:1024:0.6"  # prompt tokens (see lengths.parse_length)
    output_len: str = "lognormal:128:0.5"  # output tokens
    reuse_ratios: tuple[float, ...] = (0.5,)  # sessions: prompt share repeated from earlier turns; sweepable
    turns_per_session: int = 4
    sessions_in_flight: int = 32  # conversations interleaved at a time
    trace_path: str = SAMPLE_TRACE
    trace_speedup: float = 1.0  # replay this many times faster than the trace's timestamps
    slo_ttft_ms: float | None = None
    slo_tpot_ms: tuple[float, ...] = ()  # one SLO per value (each with slo_ttft_ms)
    seed: int = 0
    preset: str = ""  # the preset this config was derived from when overrides renamed it

    def override(self, **changes: object) -> BenchConfig:
        """A copy with every non-None change applied; raises ValueError on an unknown field.

        A run is named by what it runs: once a setting that shapes the traffic is overridden, the
        scenario becomes `custom` and the description states the arrivals, workload and lengths
        sent, naming the preset it started from (`preset`)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown bench setting(s): {', '.join(sorted(unknown))}")
        # Any: a caller's values are not typed per setting (`validate` checks each setting's rule).
        applied: dict[str, Any] = {
            k: v for k, v in changes.items() if v is not None and v != getattr(self, k)
        }
        if not applied:
            return self
        note = ", ".join(f"{k}={_show(v)}" for k, v in applied.items())
        changed = replace(self, **applied)
        if set(applied) <= _NAME_KEEPING:
            described = (
                f"{self.description} (overrides: {note})" if self.description else f"overrides: {note}"
            )
            return replace(changed, description=described)
        base = self.preset or self.scenario
        return replace(
            changed, scenario="custom", preset=base,
            description=f"{describe(changed)} (preset {base} with overrides: {note})",
        )  # fmt: skip


# Overrides that do not change what traffic is sent keep the preset's name: another draw, other SLOs,
# or a longer or shorter run of the same traffic.
_NAME_KEEPING = frozenset({"seed", "slo_ttft_ms", "slo_tpot_ms", "num_requests"})


def describe(cfg: BenchConfig) -> str:
    """What a config sends, in words (for runs named `custom`)."""
    if cfg.workload == "trace":
        return f"trace replay of {Path(cfg.trace_path).name} at {cfg.trace_speedup:g}x"
    if cfg.arrival == "closed":
        how = f"closed loop, concurrency {_show(cfg.concurrencies)}"
    else:
        how = f"{cfg.arrival} arrivals at {_show(cfg.request_rates)} req/s"
    what = f"{cfg.workload} prompts {cfg.input_len} tokens, outputs {cfg.output_len} tokens"
    if cfg.workload == "sessions":
        what += f", reuse {_show(cfg.reuse_ratios)}"
    return f"{how}; {what}"


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


@dataclass(frozen=True, slots=True)
class RunPoint:
    label: str  # unique within the scenario, e.g. "rate-4", "c-96", "reuse-0.5"
    request_rate: float | None  # emulated req/s, None in closed loop and trace replay
    concurrency: int  # closed loop workers, else the open loop cap (0 = none)
    reuse_ratio: float
    num_requests: int


def _mixed(d: Deployment) -> BenchConfig:
    return BenchConfig(
        "mixed", "Poisson 4 req/s, multi-turn sessions with 50% prefix reuse, log-normal lengths",
        workload="sessions", slo_ttft_ms=2000.0, slo_tpot_ms=(50.0,),
    )  # fmt: skip


def _prefill(d: Deployment) -> BenchConfig:
    return BenchConfig(
        "prefill", "Paper prefill point: 4,096-token prompts, 1 output token, 8 in flight per prefill NPU",
        arrival="closed", concurrencies=(8 * d.num_prefill_npus,), num_requests=32 * d.num_prefill_npus,
        input_len="4096", output_len="1",
    )  # fmt: skip


def _decode(d: Deployment) -> BenchConfig:
    c = max(1, round(96 * d.num_decode_npus))
    return BenchConfig(
        "decode", "Paper decode point: batch 96 per decode NPU, 4,096-token prompts, 256 output tokens",
        arrival="closed", concurrencies=(c,), num_requests=2 * c, input_len="4096", output_len="256",
        slo_tpot_ms=(50.0,),
    )  # fmt: skip


def _slo(d: Deployment) -> BenchConfig:
    levels = tuple(max(1, round(b * d.num_decode_npus)) for b in (8, 16, 32, 64, 96))
    return BenchConfig(
        "slo", "Paper TPOT SLOs 50/30/15 ms: decode batch sweep 8..96 per NPU, prompt 4,096, output 256",
        arrival="closed", concurrencies=levels, num_requests=0, input_len="4096", output_len="256",
        slo_tpot_ms=(50.0, 30.0, 15.0),
    )  # fmt: skip


def _cache(d: Deployment) -> BenchConfig:
    return BenchConfig(
        "cache", "Context caching: multi-turn sessions with prefix reuse 0/50/90%, prompt 4,096, output 32",
        arrival="closed", concurrencies=(16,), num_requests=128, workload="sessions", input_len="4096",
        output_len="32", reuse_ratios=(0.0, 0.5, 0.9), slo_ttft_ms=2000.0,
    )  # fmt: skip


def _trace(d: Deployment) -> BenchConfig:
    return BenchConfig(
        "trace", "Replay of the shipped Mooncake-format sample trace (200 requests, shared-prefix blocks)",
        arrival="trace", workload="trace", num_requests=0, slo_ttft_ms=2000.0, slo_tpot_ms=(50.0,),
    )  # fmt: skip


def _sweep(d: Deployment) -> BenchConfig:
    return BenchConfig(
        "sweep", "Poisson rate sweep 1..16 req/s over synthetic log-normal lengths, goodput vs rate",
        request_rates=(1.0, 2.0, 4.0, 8.0, 16.0), num_requests=100, slo_ttft_ms=2000.0, slo_tpot_ms=(50.0,),
    )  # fmt: skip


PRESETS: dict[str, Callable[[Deployment], BenchConfig]] = {
    "mixed": _mixed, "prefill": _prefill, "decode": _decode, "slo": _slo, "cache": _cache, "trace": _trace,
    "sweep": _sweep,
}  # fmt: skip


def preset(name: str, deployment: Deployment) -> BenchConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown scenario '{name}' (one of: {', '.join(PRESETS)})")
    return PRESETS[name](deployment)


def sweep_axis(cfg: BenchConfig) -> str | None:
    """The one setting with several values ("request_rate", "concurrency", "reuse_ratio"), or None."""
    axes = [
        name
        for name, values, used in (
            ("request_rate", cfg.request_rates, cfg.arrival in ("poisson", "constant")),
            ("concurrency", cfg.concurrencies, cfg.arrival == "closed"),
            ("reuse_ratio", cfg.reuse_ratios, cfg.workload == "sessions"),
        )
        if used and len(values) > 1
    ]
    if len(axes) > 1:
        raise ValueError(f"sweep over one setting at a time, got several: {', '.join(axes)}")
    return axes[0] if axes else None


def validate(cfg: BenchConfig) -> None:
    """Raises ValueError naming the setting and its rule, before anything runs."""
    if cfg.arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got '{cfg.arrival}'")
    if cfg.workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got '{cfg.workload}'")
    if cfg.arrival == "trace" and cfg.workload != "trace":
        raise ValueError("arrival 'trace' replays trace timestamps: it needs workload 'trace'")
    if cfg.num_requests < 0 or any(c < 1 for c in cfg.concurrencies) or cfg.max_concurrency < 0:
        raise ValueError("num_requests and max_concurrency must be >= 0, concurrency >= 1")
    if cfg.arrival in ("poisson", "constant") and any(r <= 0 for r in cfg.request_rates):
        raise ValueError(f"request_rate must be > 0, got {_show(cfg.request_rates)}")
    if cfg.burstiness <= 0 or cfg.trace_speedup <= 0:
        raise ValueError("burstiness and trace_speedup must be > 0")
    if cfg.workload == "sessions" and not all(0.0 <= r < 1.0 for r in cfg.reuse_ratios):
        raise ValueError(f"reuse must be in [0, 1), got {_show(cfg.reuse_ratios)}")
    if cfg.turns_per_session < 1:
        raise ValueError("turns must be >= 1")
    for name in ("input_len", "output_len"):
        try:
            parse_length(getattr(cfg, name))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    sweep_axis(cfg)


def run_points(cfg: BenchConfig) -> list[RunPoint]:
    """One point per value of the sweep axis (a single point when nothing is swept)."""
    validate(cfg)
    axis = sweep_axis(cfg)
    rates = cfg.request_rates if cfg.arrival in ("poisson", "constant") else (None,)
    closed = cfg.arrival == "closed"
    concs = cfg.concurrencies if closed else (cfg.max_concurrency,)
    reuses = cfg.reuse_ratios if cfg.workload == "sessions" else (0.0,)
    points = []
    for rate in rates:
        for conc in concs:
            for reuse in reuses:
                n = cfg.num_requests or (max(32, 2 * conc) if closed else 0)
                points.append(RunPoint(_label(cfg.scenario, axis, rate, conc, reuse), rate, conc, reuse, n))
    return points


def _label(scenario: str, axis: str | None, rate: float | None, concurrency: int, reuse: float) -> str:
    if axis == "request_rate":
        return f"rate-{rate:g}"
    if axis == "concurrency":
        return f"c-{concurrency}"
    if axis == "reuse_ratio":
        return f"reuse-{reuse:g}"
    return scenario
