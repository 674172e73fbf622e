"""`supernode sim`: `supernode bench`'s workloads against a whole deployment, in virtual time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from supernode.loadgen.cli import _floats, _ints, _print, _RichProgress
from supernode.loadgen.scenarios import PRESETS, preset
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import run_folder
from supernode.sim.deployment import SimDeployment, load_deployment
from supernode.sim.run import SimOptions, simulate

Opt = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("sim")
    def sim(
        scenario: Annotated[str, Opt(help=f"Preset: {', '.join(PRESETS)}")] = "mixed",
        deployment: Annotated[Path | None, Opt(help="Deployment YAML (default: the paper's)")] = None,
        prefill_instances: Annotated[int | None, Opt(help="Prefill instances (paper: 6)")] = None,
        prefill_npus: Annotated[int | None, Opt(help="NPUs per prefill instance (paper: 16)")] = None,
        decode_instances: Annotated[int | None, Opt(help="Decode instances (paper: 1)")] = None,
        decode_npus: Annotated[int | None, Opt(help="NPUs per decode instance (paper: 160, EP320)")] = None,
        pool_gb: Annotated[float | None, Opt(help="Nominal EMS DRAM over every node (GB)")] = None,
        policy: Annotated[
            str | None, Opt(help="Router prefill policy: paper | round_robin | kv_aware")
        ] = None,
        arrival: Annotated[str | None, Opt(help="poisson | constant | closed | trace")] = None,
        request_rate: Annotated[str | None, Opt(help="Req/s (emulated); comma list = sweep")] = None,
        burstiness: Annotated[float | None, Opt(help="Gamma shape of gaps (1 = Poisson)")] = None,
        concurrency: Annotated[str | None, Opt(help="Closed-loop workers; comma list = sweep")] = None,
        max_concurrency: Annotated[int | None, Opt(help="Open-loop cap on requests in flight")] = None,
        num_requests: Annotated[int | None, Opt(help="Requests per run point (0 = auto)")] = None,
        workload: Annotated[str | None, Opt(help="synthetic | sessions | trace")] = None,
        input_len: Annotated[str | None, Opt(help="fixed:N | uniform:LO:HI | lognormal:MEDIAN:SIGMA")] = None,
        output_len: Annotated[str | None, Opt(help="Same forms as --input-len")] = None,
        reuse: Annotated[str | None, Opt(help="Sessions: prefix reuse ratio(s), comma list = sweep")] = None,
        turns: Annotated[int | None, Opt(help="Sessions: turns per conversation")] = None,
        trace: Annotated[str | None, Opt(help="Mooncake JSONL trace (default: shipped sample)")] = None,
        trace_speedup: Annotated[float | None, Opt(help="Replay the trace this many times faster")] = None,
        slo_ttft: Annotated[float | None, Opt(help="TTFT SLO (ms)")] = None,
        slo_tpot: Annotated[str | None, Opt(help="TPOT SLO(s) in ms, comma list")] = None,
        seed: Annotated[int | None, Opt(help="Seed for arrivals and prompts")] = None,
        tokens: Annotated[
            bool, Opt("--tokens", help="Draw every output token (default: count only)")
        ] = False,
        exact_steps: Annotated[
            bool, Opt("--exact-steps", help="Price every decode step (default: runs of steps at once)")
        ] = False,
        until: Annotated[float, Opt(help="Drop arrivals after this emulated second (0 = none)")] = 0.0,
        sample_s: Annotated[float, Opt(help="Emulated s between occupancy samples")] = 1.0,
        reports: Annotated[Path, Opt(help="Folder that gets one sub-folder per run")] = Path("reports"),
        plots: Annotated[bool, Opt(help="Write PNG plots")] = True,
        progress: Annotated[bool, Opt(help="Show progress bars (requests, simulated time)")] = True,
    ) -> None:
        """Simulate the whole supernode (router, every prefill and decode instance, the UB fabric, the
        EMS pool) in one process on virtual time, with the live services' engines. Writes the same
        results.json, summary.md and plots as `supernode bench`, plus per-instance utilisation,
        queue lengths and KV/pool occupancy over time (sim_series.json, occupancy.png). Without
        --tokens, decode steps between two changes of the batch run as one, priced exactly at both ends
        and on the line between (--exact-steps prices every step; the README gives the difference)."""
        try:
            dep = load_deployment(deployment) if deployment else SimDeployment()
            flags: dict[str, object] = {"num_prefill": prefill_instances, "prefill_npus": prefill_npus,
                     "num_decode": decode_instances, "decode_npus": decode_npus, "pool_gb": pool_gb,
                     "policy": policy}  # fmt: skip
            dep = dataclasses.replace(dep, **{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]
            dep.settings()  # validates the figures (a clear error naming the setting)
            cfg = preset(scenario, Deployment(dep.num_prefill_npus, dep.num_decode_npus)).override(
                arrival=arrival, request_rates=_floats(request_rate), burstiness=burstiness,
                concurrencies=_ints(concurrency), max_concurrency=max_concurrency, num_requests=num_requests,
                workload=workload, input_len=input_len, output_len=output_len, reuse_ratios=_floats(reuse),
                turns_per_session=turns, trace_path=trace, trace_speedup=trace_speedup, slo_ttft_ms=slo_ttft,
                slo_tpot_ms=_floats(slo_tpot), seed=seed,
            )  # fmt: skip
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if until < 0 or sample_s <= 0:
            raise typer.BadParameter("--until must be >= 0 and --sample-s > 0")
        console = Console()
        folder = run_folder(reports, cfg.scenario)
        console.print(
            f"[bold]{cfg.scenario}[/]: {cfg.description} -> sim of {dep.num_prefill} x "
            f"{dep.prefill_npus}-NPU prefill, {dep.num_decode} x {dep.decode_npus}-NPU decode"
        )
        options = SimOptions(tokens, until, sample_s, plots, exact_steps)
        if not progress:
            outcome = simulate(cfg, dep, folder, options)
        else:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, TextColumn("failed {task.fields[failed]}"), console=console) as bar:
                clock = bar.add_task("simulated s", total=None, failed=0)
                outcome = simulate(
                    cfg, dep, folder, options, _RichProgress(bar),
                    on_time=lambda t: bar.update(clock, completed=int(t)),
                )  # fmt: skip
        _print(console, outcome.suite)
        s = outcome.sim
        console.print(
            f"simulated {s['sim_duration_s']:.1f} emulated s in {s['sim_wall_s']:.1f} wall s "
            f"({s['sim_requests_per_s']:.0f} requests per wall second, "
            f"{s['sim_cpu_us_per_request']:.0f} CPU us per request, peak RSS {s['sim_peak_rss_mb']:.0f} MB)"
        )
