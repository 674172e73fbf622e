"""`supernode sim`: `supernode bench`'s workloads against a whole deployment, in virtual time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from supernode.loadgen import workload_flags as flags
from supernode.loadgen.cli import _print, _RichProgress
from supernode.loadgen.scenarios import PRESETS
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import run_folder
from supernode.sim.deployment import SimDeployment, load_deployment
from supernode.sim.faults import check_faults, describe, parse_fault
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
        arrival: flags.Arrival = None,
        request_rate: flags.RequestRate = None,
        burstiness: flags.Burstiness = None,
        concurrency: flags.Concurrency = None,
        max_concurrency: flags.MaxConcurrency = None,
        num_requests: flags.NumRequests = None,
        workload: flags.Workload = None,
        input_len: flags.InputLen = None,
        output_len: flags.OutputLen = None,
        reuse: flags.Reuse = None,
        turns: flags.Turns = None,
        trace: flags.Trace = None,
        trace_speedup: flags.TraceSpeedup = None,
        slo_ttft: flags.SloTtft = None,
        slo_tpot: flags.SloTpot = None,
        seed: flags.Seed = None,
        tokens: Annotated[
            bool, Opt("--tokens", help="Draw every output token (default: count only)")
        ] = False,
        exact_steps: Annotated[
            bool, Opt("--exact-steps", help="Price every decode step (default: runs of steps at once)")
        ] = False,
        until: Annotated[float, Opt(help="Drop arrivals after this emulated second (0 = none)")] = 0.0,
        fault: Annotated[
            list[str] | None,
            Opt(
                metavar="SPEC",
                help="Inject a fault (repeatable): prefill-<i>:kill@<t>, prefill-<i>:stop@<t>, "
                "decode-<i>:kill@<t> / :stop@<t> (with --tokens), +<d> to bring the instance back "
                "after d; node-<n>:down@<t>+<d>, node-<n>:<factor>@<t>+<d>; t and d in emulated "
                "seconds from the start",
            ),
        ] = None,
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
        and on the line between (--exact-steps prices every step; the README gives the difference).
        --fault kills or freezes instances and takes nodes' links down or degrades them at emulated
        instants; results.json's sim.faults says what each did and how many requests moved."""
        try:
            dep = load_deployment(deployment) if deployment else SimDeployment()
            sizes: dict[str, object] = {"num_prefill": prefill_instances, "prefill_npus": prefill_npus,
                     "num_decode": decode_instances, "decode_npus": decode_npus, "pool_gb": pool_gb,
                     "policy": policy}  # fmt: skip
            dep = dataclasses.replace(dep, **{k: v for k, v in sizes.items() if v is not None})  # type: ignore[arg-type]
            dep.settings()  # validates the figures (a clear error naming the setting)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        given = flags.WorkloadFlags.pick(locals())
        cfg = flags.workload_config(scenario, Deployment(dep.num_prefill_npus, dep.num_decode_npus), given)
        if until < 0 or sample_s <= 0:
            raise typer.BadParameter("--until must be >= 0 and --sample-s > 0")
        try:
            injected = tuple(parse_fault(text) for text in fault or ())
            check_faults(injected, dep.num_prefill, dep.num_decode, dep.num_nodes, tokens)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--fault") from None
        console = Console()
        folder = run_folder(reports, cfg.scenario)
        console.print(
            f"[bold]{cfg.scenario}[/]: {cfg.description} -> sim of {dep.num_prefill} x "
            f"{dep.prefill_npus}-NPU prefill, {dep.num_decode} x {dep.decode_npus}-NPU decode"
        )
        options = SimOptions(tokens, until, sample_s, plots, exact_steps, injected)
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
        for entry in s.get("faults", []):
            console.print(f"fault {describe(entry)}")
        for text in s.get("faults_not_reached", []):
            console.print(f"fault {text}: not reached (the run ended first)")
        if "faults" in s:
            moved = f"{s['requests_migrated']} requests moved to another decode instance"
            console.print(f"{moved} ({s['migrations']} moves)")
