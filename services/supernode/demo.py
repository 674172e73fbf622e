"""The demo workload `make run` sends, through the load generator: a closed loop of multi-turn
conversations (later turns share their earlier turns' prefix, so the context cache hits), mixed
prompt lengths, and a short report in emulated time."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from supernode.launcher import LocalStack, StackConfig
from supernode.loadgen import workloads
from supernode.loadgen.lengths import parse_length
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.runner import LoadPlan, run_load
from supernode.loadgen.stats import Deployment, compute_metrics
from supernode.loadgen.targets import SdkTarget

DEPLOYMENT = Deployment(num_prefill_npus=32, num_decode_npus=1.0)  # 2 prefill instances, 1 decode
TIME_SCALE = 1.0


def demo_specs(num_requests: int, seed: int = 7) -> list[RequestSpec]:
    """Conversations of 4 turns, prompts log-normal around 600 tokens, half of each prompt reused."""
    return workloads.sessions(
        [0.0] * num_requests, parse_length("lognormal:600:0.8"), parse_length("uniform:16:128"),
        reuse_ratio=0.5, seed=seed, turns_per_session=4, sessions_in_flight=8,
    )  # fmt: skip


async def run_demo(num_requests: int, concurrency: int, console: Console) -> int:
    # Its own ports, so the demo runs beside anything already on the default ones.
    stack = LocalStack(StackConfig(num_prefill=2, num_decode=1, ephemeral_ports=True))
    console.print(
        "[bold]Starting the local topology[/] (redis, fabric, kvpool, 2x prefill, decode, router)..."
    )
    try:
        await stack.start()
        console.print(
            f"up; logs in {stack.log_dir}. Sending {num_requests} requests, {concurrency} at a time..."
        )
        results, duration_s = await drive(stack.router_address, demo_specs(num_requests), concurrency)
    finally:
        stack.stop()
    report(console, results, duration_s)
    failed = sum(1 for r in results if not r.is_ok)
    return 0 if results and not failed else 1


async def drive(router: str, specs: list[RequestSpec], concurrency: int) -> tuple[list[RequestResult], float]:
    """Sends `specs` in a closed loop; (results, emulated duration in seconds)."""
    async with SdkTarget(router, TIME_SCALE, timeout_s=300.0) as target:
        outcome = await run_load(target, specs, LoadPlan(True, concurrency, TIME_SCALE))
    return outcome.results, outcome.wall_duration_s * TIME_SCALE


def report(console: Console, results: list[RequestResult], duration_s: float) -> None:
    m = compute_metrics(results, duration_s, DEPLOYMENT)
    table = Table(title="Supernode demo (emulated time)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests completed / failed", f"{m['completed']} / {m['failed']}")
    table.add_row("prompt / output tokens", f"{m['total_input_tokens']} / {m['total_output_tokens']}")
    cached = m["total_cached_tokens"]
    table.add_row("cached prompt tokens", f"{cached} ({cached / max(1, m['total_input_tokens']):.0%})")
    for name, unit in (("ttft", "{:.1f}"), ("tpot", "{:.2f}")):
        for stat in ("median", "p90", "p99"):
            table.add_row(f"{name.upper()} {stat} (ms)", unit.format(m[f"{stat}_{name}_ms"]))
    table.add_row("output throughput (tok/s)", f"{m['output_throughput']:.0f}")
    console.print(table)
    for kind, count in m["errors"].items():
        console.print(f"[red]{count} x {kind}[/]")
