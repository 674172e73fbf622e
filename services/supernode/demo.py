"""The demo workload `make run` sends: mixed prompt lengths, some shared prefixes, a short report."""

from __future__ import annotations

import asyncio
import random
import statistics

from rich.console import Console
from rich.table import Table

from supernode.launcher import LocalStack, StackConfig
from supernode.sdk import AsyncClient, RequestStats, SupernodeError

_SYSTEM = (
    "You are Supernode's demo assistant. Answer briefly and precisely. The CloudMatrix384 joins 384 "
    "Ascend 910C NPUs over the Unified Bus; CloudMatrix-Infer disaggregates prefill, decode and caching. "
)


def demo_prompts(num: int, seed: int = 7) -> list[str]:
    """Prompts of mixed length; about half share a long system prefix (context-cache hits)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(num):
        body = " ".join(f"topic{rng.randrange(1000)}" for _ in range(rng.choice((8, 40, 200, 600))))
        prefix = _SYSTEM * 3 if i % 2 == 0 else ""
        prompts.append(f"{prefix}Question {i}: {body}")
    return prompts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


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
        stats, errors = await _drive(stack.router_address, demo_prompts(num_requests), concurrency)
    finally:
        stack.stop()
    _report(console, stats, errors)
    return 0 if stats and not errors else 1


async def _drive(router: str, prompts: list[str], concurrency: int) -> tuple[list[RequestStats], list[str]]:
    gate = asyncio.Semaphore(concurrency)
    stats: list[RequestStats] = []
    errors: list[str] = []
    rng = random.Random(11)
    async with AsyncClient(router, timeout_s=300) as client:

        async def one(i: int, prompt: str) -> None:
            async with gate:
                try:
                    done = await client.complete(prompt, max_tokens=rng.choice((16, 64, 128)), seed=i)
                    stats.append(done.stats)
                except SupernodeError as err:
                    errors.append(f"{err.code}: {err.message}")

        # The first wave fills the cache; later requests with the shared prefix hit it.
        await one(0, prompts[0])
        await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts[1:], start=1)))
    return stats, errors


def _report(console: Console, stats: list[RequestStats], errors: list[str]) -> None:
    table = Table(title="Supernode demo (emulated time)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests completed", str(len(stats)))
    table.add_row("errors", str(len(errors)))
    if stats:
        ttft = [s.ttft_s * 1e3 for s in stats]
        tpot = [s.tpot_s * 1e3 for s in stats if s.num_output_tokens > 1]
        prompt_tokens = sum(s.num_prompt_tokens for s in stats)
        cached = sum(s.num_cached_tokens for s in stats)
        table.add_row(
            "prompt / output tokens", f"{prompt_tokens} / {sum(s.num_output_tokens for s in stats)}"
        )
        table.add_row("cached prompt tokens", f"{cached} ({cached / max(1, prompt_tokens):.0%})")
        table.add_row("requests with cache hits", str(sum(1 for s in stats if s.num_cached_tokens)))
        for q in (50, 90, 99):
            table.add_row(f"TTFT p{q} (ms)", f"{percentile(ttft, q):.1f}")
        for q in (50, 90, 99):
            table.add_row(f"TPOT p{q} (ms)", f"{percentile(tpot, q):.2f}" if tpot else "-")
        table.add_row("mean TTFT (ms)", f"{statistics.fmean(ttft):.1f}")
    console.print(table)
    for err in errors[:5]:
        console.print(f"[red]{err}[/]")
