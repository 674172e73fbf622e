"""The workload flags `supernode bench` and `supernode sim` share: one declaration, one meaning.

Each flag is an `Annotated` type for a typer parameter (default None: the preset's value), and
`workload_config` turns them into the run's `BenchConfig`, so the two commands cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any

import typer

from supernode.loadgen.scenarios import BenchConfig, preset, validate
from supernode.loadgen.stats import Deployment

Opt = typer.Option

Arrival = Annotated[str | None, Opt(help="poisson | constant | closed | trace")]
RequestRate = Annotated[str | None, Opt(help="Req/s (emulated); comma list = sweep")]
Burstiness = Annotated[float | None, Opt(help="Gamma shape of gaps (1 = Poisson)")]
Concurrency = Annotated[str | None, Opt(help="Closed-loop workers; comma list = sweep")]
MaxConcurrency = Annotated[int | None, Opt(help="Open-loop cap on requests in flight")]
NumRequests = Annotated[int | None, Opt(help="Requests per run point (0 = auto)")]
Workload = Annotated[str | None, Opt(help="synthetic | sessions | trace")]
InputLen = Annotated[str | None, Opt(help="fixed:N | uniform:LO:HI | lognormal:MEDIAN:SIGMA")]
OutputLen = Annotated[str | None, Opt(help="Same forms as --input-len")]
Reuse = Annotated[str | None, Opt(help="Sessions: prefix reuse ratio(s), comma list = sweep")]
Turns = Annotated[int | None, Opt(help="Sessions: turns per conversation")]
Trace = Annotated[str | None, Opt(help="Mooncake JSONL trace (default: shipped sample)")]
TraceSpeedup = Annotated[float | None, Opt(help="Replay the trace this many times faster")]
SloTtft = Annotated[float | None, Opt(help="TTFT SLO (ms)")]
SloTpot = Annotated[str | None, Opt(help="TPOT SLO(s) in ms, comma list")]
Seed = Annotated[int | None, Opt(help="Seed for arrivals and prompts")]


def floats(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(float(x) for x in text.split(",") if x.strip())


def ints(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(x) for x in text.split(",") if x.strip())


@dataclass(frozen=True, slots=True)
class WorkloadFlags:
    """The flags as given on the command line (None: keep the preset's value)."""

    arrival: str | None = None
    request_rate: str | None = None
    burstiness: float | None = None
    concurrency: str | None = None
    max_concurrency: int | None = None
    num_requests: int | None = None
    workload: str | None = None
    input_len: str | None = None
    output_len: str | None = None
    reuse: str | None = None
    turns: int | None = None
    trace: str | None = None
    trace_speedup: float | None = None
    slo_ttft: float | None = None
    slo_tpot: str | None = None
    seed: int | None = None

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> WorkloadFlags:
        """The flags among a command's parameters (its `locals()`)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


def workload_config(scenario: str, deployment: Deployment, flags: WorkloadFlags) -> BenchConfig:
    """The preset `scenario` with `flags` applied; a bad value raises `typer.BadParameter` naming it."""
    try:
        cfg = preset(scenario, deployment).override(
            arrival=flags.arrival, request_rates=floats(flags.request_rate), burstiness=flags.burstiness,
            concurrencies=ints(flags.concurrency), max_concurrency=flags.max_concurrency,
            num_requests=flags.num_requests, workload=flags.workload, input_len=flags.input_len,
            output_len=flags.output_len, reuse_ratios=floats(flags.reuse), turns_per_session=flags.turns,
            trace_path=flags.trace, trace_speedup=flags.trace_speedup, slo_ttft_ms=flags.slo_ttft,
            slo_tpot_ms=floats(flags.slo_tpot), seed=flags.seed,
        )  # fmt: skip
        validate(cfg)
        return cfg
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
