"""`supernode bench`: load tests against the router (SDK, default) or any OpenAI-compatible endpoint.

A `--scenario` preset sets every default; explicit flags override it. Comma-separated values of
`--request-rate`, `--concurrency` or `--reuse` sweep that setting (one at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from supernode.loadgen import workload_flags as flags
from supernode.loadgen.bench import Predictor
from supernode.loadgen.http_target import HttpTarget
from supernode.loadgen.records import RequestResult
from supernode.loadgen.report import fmt, summary_rows
from supernode.loadgen.scenarios import PRESETS, BenchConfig, RunPoint
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import SuiteOutcome, failure_rate, run_folder, run_suite
from supernode.loadgen.targets import SdkTarget, Target

Opt = typer.Option


def _defaults() -> tuple[str, float, Deployment, str]:
    """Router address, time scale, NPU counts and model name from the shared settings."""
    from supernode.runtime.config import get_settings

    s = get_settings()
    num_prefill = s.prefill.num_npus * max(1, len(s.router.prefill_addresses))
    num_decode = s.decode.num_dies / 2 * max(1, len(s.router.decode_addresses))
    return s.router.address, s.runtime.time_scale, Deployment(num_prefill, num_decode), s.frontend.model_name


class _RichProgress:
    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None
        self._failed = 0

    def start(self, point: RunPoint, num_requests: int) -> None:
        self._failed = 0
        self._task = self._bar.add_task(point.label, total=num_requests, failed=0)

    def advance(self, result: RequestResult) -> None:
        self._failed += 0 if result.is_ok else 1
        if self._task is not None:
            self._bar.update(self._task, advance=1, failed=self._failed)


def _print(console: Console, outcome: SuiteOutcome) -> None:
    table = Table(title=f"supernode bench: {outcome.results['scenario']} (emulated time)")
    table.add_column("metric")
    for rep in outcome.reports:
        table.add_column(rep.point.label, justify="right")
    for label, cells in summary_rows(outcome.reports):
        table.add_row(label, *cells)
    console.print(table)
    for rep in outcome.reports:
        for key, value in rep.predicted.items():
            console.print(
                f"  {rep.point.label}: {key} measured {fmt(rep.metrics.get(key))}, model {fmt(value)}"
            )
        for warning in rep.metrics.get("warnings") or []:
            console.print(f"[yellow]warning[/] {rep.point.label}: {warning}")
    for best in outcome.best_under_slo:
        console.print(
            f"  best under {best['slo']}: {best['label'] or 'none met'} "
            f"({fmt(best['decode_steady_tokens_per_s_per_npu'], '{:.0f}')} decode tok/s per NPU)"
        )
    console.print(f"report: {outcome.folder / 'summary.md'}  (results.json and plots beside it)")


class _Started:
    def __init__(self, router_address: str, num_prefill_npus: int) -> None:
        self.router_address = router_address
        self.num_prefill_npus = num_prefill_npus


@contextlib.contextmanager
def _local_stack(target: str | None) -> Iterator[_Started | None]:
    """Starts the local topology unless a router already answers at `target` (or the settings' one)."""
    from supernode.launcher import LocalStack, StackConfig
    from supernode.runtime.channels import is_serving, open_channel
    from supernode.runtime.config import get_settings

    settings = get_settings()
    address = target or settings.router.address

    async def probe() -> bool:
        async with open_channel(address, settings) as channel:
            return await is_serving(channel, 1.0)

    if asyncio.run(probe()):
        yield None
        return
    local = LocalStack(StackConfig(num_prefill=2, num_decode=1, ephemeral_ports=True))
    Console().print(f"no router at {address}: starting a local stack (logs in {local.log_dir})")
    try:
        asyncio.run(local.start())
        yield _Started(local.router_address, 2 * settings.prefill.num_npus)
    finally:
        local.stop()


# Locals of `bench` that `_bench_body` does not take (the passkey flags are handled apart).
_NOT_BENCH_BODY = (
    "stack",
    "auto",
    "started",
    "_bench_body",
    "context_window",
    "lengths",
    "depths",
    "policies",
    "huge",
    "filler",
    "max_failure_rate",
)


def register(app: typer.Typer, predictor: Predictor | None = None) -> None:
    """Add the `bench` command to `app`; `predictor` (the cost model) is used for the Supernode target."""

    @app.command("bench")
    def bench(
        scenario: Annotated[str, Opt(help=f"Preset: {', '.join(PRESETS)}")] = "mixed",
        target: Annotated[
            str | None, Opt(help="Router gRPC address (SDK target; default from settings)")
        ] = None,
        endpoint: Annotated[str | None, Opt(help="OpenAI-compatible base URL instead of the SDK")] = None,
        model: Annotated[str | None, Opt(help="Model name for --endpoint")] = None,
        api_key: Annotated[str, Opt(help="Bearer token for --endpoint")] = "",
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
        time_scale: Annotated[float | None, Opt(help="Emulated s per wall s (default from settings)")] = None,
        prefill_npus: Annotated[int | None, Opt(help="Prefill NPUs in the deployment")] = None,
        decode_npus: Annotated[float | None, Opt(help="Decode NPUs in the deployment")] = None,
        timeout_s: Annotated[float, Opt(help="Per-request timeout (wall s)")] = 600.0,
        max_failure_rate: Annotated[
            float, Opt(help="Exit 1 when more than this share of requests failed (0..1)", min=0.0, max=1.0)
        ] = 0.0,
        reports: Annotated[Path, Opt(help="Folder that gets one sub-folder per run")] = Path("reports"),
        plots: Annotated[bool, Opt(help="Write PNG plots")] = True,
        progress: Annotated[bool, Opt(help="Show a progress bar")] = True,
        stack: Annotated[
            str, Opt(help="auto: start a local stack when no router answers (and stop it after); never")
        ] = "never",
        context_window: Annotated[int, Opt(help="passkey: the router's window (tokens)")] = 4096,
        lengths: Annotated[str | None, Opt(help="passkey: prompt lengths (tokens), comma list")] = None,
        depths: Annotated[str | None, Opt(help="passkey: passkey depths in [0, 1], comma list")] = None,
        policies: Annotated[str | None, Opt(help="passkey: xl3m,truncate (default both)")] = None,
        huge: Annotated[bool, Opt(help="passkey: add 4M and 20M-token prompts")] = False,
        filler: Annotated[str, Opt(help="passkey: repeat (classic) or varied (random sentences)")] = "repeat",
    ) -> None:
        """Run a load test and write results.json, summary.md and plots under --reports."""
        if scenario == "passkey":
            from supernode.loadgen.passkey_cli import run_passkey

            try:
                run_passkey(
                    target=target, context_window=context_window, lengths=flags.ints(lengths),
                    depths=flags.floats(depths), policies=tuple(policies.split(",")) if policies else None,
                    huge=huge, seed=seed or 0, time_scale=time_scale, timeout_s=timeout_s, reports=reports,
                    plots=plots, filler=filler,
                )  # fmt: skip
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
            return
        if stack not in ("auto", "never"):
            raise typer.BadParameter("must be 'auto' or 'never'", param_hint="--stack")
        auto = stack == "auto" and not endpoint
        with _local_stack(target) if auto else contextlib.nullcontext() as started:
            if started is not None:
                target = started.router_address
                prefill_npus = prefill_npus or started.num_prefill_npus
            args = {k: v for k, v in locals().items() if k not in _NOT_BENCH_BODY}
            outcome = _bench_body(**args)
        rate = failure_rate(outcome)
        if rate > max_failure_rate:
            Console(stderr=True).print(
                f"[red]{rate:.1%} of requests failed, above --max-failure-rate {max_failure_rate:g}[/]"
            )
            raise typer.Exit(1)

    def _bench_body(
        scenario: str,
        target: str | None,
        endpoint: str | None,
        model: str | None,
        api_key: str,
        arrival: flags.Arrival,
        request_rate: flags.RequestRate,
        burstiness: flags.Burstiness,
        concurrency: flags.Concurrency,
        max_concurrency: flags.MaxConcurrency,
        num_requests: flags.NumRequests,
        workload: flags.Workload,
        input_len: flags.InputLen,
        output_len: flags.OutputLen,
        reuse: flags.Reuse,
        turns: flags.Turns,
        trace: flags.Trace,
        trace_speedup: flags.TraceSpeedup,
        slo_ttft: flags.SloTtft,
        slo_tpot: flags.SloTpot,
        seed: flags.Seed,
        time_scale: float | None,
        prefill_npus: int | None,
        decode_npus: float | None,
        timeout_s: float,
        reports: Path,
        plots: bool,
        progress: bool,
    ) -> SuiteOutcome:
        address, default_scale, deployment, default_model = _defaults()
        deployment = Deployment(
            prefill_npus or deployment.num_prefill_npus, decode_npus or deployment.num_decode_npus
        )
        scale = time_scale or default_scale
        cfg = flags.workload_config(scenario, deployment, flags.WorkloadFlags.pick(locals()))
        tgt: Target
        if endpoint:
            tgt, label, hook = (
                HttpTarget(endpoint, model or default_model, scale, timeout_s, api_key),
                endpoint,
                None,
            )
        else:
            tgt, label, hook = (
                SdkTarget(target or address, scale, timeout_s),
                f"sdk {target or address}",
                predictor,
            )
        console = Console()
        folder = run_folder(reports, cfg.scenario)
        console.print(f"[bold]{cfg.scenario}[/]: {cfg.description} -> {label}")
        outcome = _run(cfg, tgt, label, deployment, scale, folder, hook, console if progress else None, plots)
        _print(console, outcome)
        return outcome


def _run(
    cfg: BenchConfig,
    target: Target,
    label: str,
    deployment: Deployment,
    scale: float,
    folder: Path,
    predictor: Predictor | None,
    console: Console | None,
    plots: bool,
) -> SuiteOutcome:
    async def main() -> SuiteOutcome:
        async with target:
            if console is None:
                return await run_suite(cfg, target, label, deployment, scale, folder, predictor, None, plots)
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, TextColumn("failed {task.fields[failed]}"), console=console) as bar:
                sink = _RichProgress(bar)
                return await run_suite(cfg, target, label, deployment, scale, folder, predictor, sink, plots)

    try:
        return asyncio.run(main())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
