"""`make chaos`: the local topology (2 prefill, 2 decode, the HTTP frontend) under faults.

For each scenario a fresh stack starts on ephemeral loopback ports, the same seeded request mix runs
under load, the fault hits `fault_at_s` into it, and the scenario's row is written: `scenario,
requests, completed, failed, lost_streams, wrong_tokens, hung, p99_e2e_ms, notes` (`overload-10x`
adds `shed` and the admitted `p99_ttft_ms`). A fault-free baseline runs first; `wrong_tokens` counts
completed streams whose tokens differ from the baseline's for the same request and seed. Every request
is bounded in wall time (`hung` when it runs out), so the run ends by itself; every process it started
is stopped (stopped ones resumed first) whatever happens. Output: reports/chaos.json, reports/chaos.md
and each stack's logs under reports/chaos-logs/<scenario>/.

    python -m benchmarks.chaos [--quick] [--scenario decode-kill9,overload-10x]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos_load import make_specs
from benchmarks.chaos_scenarios import SCENARIOS, Ctx, Row, Scenario, baseline
from supernode.launcher import LocalStack, StackConfig

REPORTS = Path("reports")
COLUMNS = ("scenario", "requests", "completed", "failed", "lost_streams", "wrong_tokens", "hung",
           "p99_e2e_ms", "shed", "p99_ttft_ms", "notes")  # fmt: skip
DECODE_DIES = 16  # one node per decode instance, so a node outage takes out exactly one of them


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def stack_env(num_requests: int, extra: dict[str, str]) -> dict[str, str]:
    return {
        "SUPERNODE_RUNTIME__DRAIN_TIMEOUT_S": "3",
        "SUPERNODE_DECODE__NUM_DIES": str(DECODE_DIES),
        # admission sized for this load: the baseline fits twice over, 10x does not
        "SUPERNODE_ROUTER__ADMISSION_MAX_INFLIGHT": str(2 * num_requests),
        **extra,
    }


async def run_scenario(scenario: Scenario, args: argparse.Namespace, ctx_args: dict[str, Any]) -> Row:
    config = StackConfig(
        num_prefill=2, num_decode=2, with_frontend=True, ephemeral_ports=True,
        log_dir=REPORTS / "chaos-logs" / scenario.name,
        env=stack_env(len(ctx_args["specs"]), scenario.stack_env),
    )  # fmt: skip
    stack = LocalStack(config)
    ctx = Ctx(scenario.name, stack, **ctx_args)
    try:
        say(f"{scenario.name}: starting 2 prefill + 2 decode + frontend")
        try:
            await stack.start(timeout_s=90)
        except (RuntimeError, TimeoutError) as err:  # e.g. a free port taken by another process meanwhile
            say(f"{scenario.name}: the stack did not start ({err}); the other scenarios still run")
            return {"scenario": scenario.name, "notes": f"harness: the stack did not start: {err}"}
        async with asyncio.timeout(args.scenario_timeout_s):
            row = await scenario.run(ctx)
    except TimeoutError:
        row = {"scenario": scenario.name, "notes": f"harness: scenario exceeded {args.scenario_timeout_s:g}s"}
    finally:
        ctx.resume()
        codes = stack.stop(timeout_s=10)
        killed = [name for name, code in codes.items() if code is None]
        if killed:
            say(f"{scenario.name}: had to SIGKILL {', '.join(killed)} at the end")
    say(f"{scenario.name}: " + ", ".join(f"{k}={row.get(k)}" for k in COLUMNS[1:8] if k in row))
    return row


async def run(args: argparse.Namespace) -> list[Row]:
    names = args.scenario.split(",") if args.scenario else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"--scenario: unknown {unknown}; known: {', '.join(SCENARIOS)}")
    specs = make_specs(args.requests, args.max_tokens)
    ctx_args = dict(specs=specs, baseline={}, timeout_s=args.timeout_s, fault_at_s=args.fault_at_s, say=say)
    rows = [await run_scenario(Scenario("baseline", baseline), args, ctx_args)]
    for name in names:
        scenario = SCENARIOS[name]
        if scenario.needs == "redis-cluster":
            rows.append(await run_cluster_scenario(args))
            continue
        rows.append(await run_scenario(scenario, args, ctx_args))
    return rows


async def run_cluster_scenario(args: argparse.Namespace) -> Row:
    """redis-master-kill on its own stack: the pool on a 3-master + 3-replica Redis Cluster behind two
    pool services, 2 prefill + 1 decode, its own prefix-sharing load (benchmarks/kvpool_chaos.py)."""
    from benchmarks import kvpool_chaos

    say("redis-master-kill: starting a 3 + 3 Redis Cluster, 2 pool services, 2 prefill + 1 decode")
    stack = LocalStack(
        kvpool_chaos.stack_config(ephemeral_ports=True, log_dir=REPORTS / "chaos-logs" / "redis-master-kill")
    )
    try:
        await stack.start(timeout_s=120)
        async with asyncio.timeout(args.scenario_timeout_s):
            row: Row = await kvpool_chaos.redis_master_kill(
                stack, kvpool_chaos.workload(2 * args.requests, seed=3), kill_after_s=args.fault_at_s
            )
    except TimeoutError:
        row = {"scenario": "redis-master-kill", "notes": f"harness: exceeded {args.scenario_timeout_s:g}s"}
    finally:
        stack.stop(timeout_s=10)
    say("redis-master-kill: " + ", ".join(f"{k}={row.get(k)}" for k in COLUMNS[1:8] if k in row))
    return row


def markdown(rows: list[Row], args: argparse.Namespace) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = [
        "# make chaos", "",
        f"2 prefill + 2 decode instances, time scale 1.0; {args.requests} requests per scenario "
        f"(max_tokens {args.max_tokens}), each bounded at {args.timeout_s:g}s wall; faults at "
        f"t={args.fault_at_s:g}s. Targets (issue 12): lost_streams 0, wrong_tokens 0, hung 0, failed 0 "
        "except requests that arrive while the only Redis is down; overload-10x sheds and keeps "
        "admitted p99 TTFT within 5x the unloaded p99.", "",
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
    ]  # fmt: skip
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "/")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="", help="comma-separated names (default: all runnable)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter requests (about 4 minutes)")
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    args.requests, args.max_tokens = (12, 256) if args.quick else (32, 512)
    args.timeout_s, args.fault_at_s = (15.0, 1.0) if args.quick else (30.0, 1.5)
    args.scenario_timeout_s = 4 * args.timeout_s + 30
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through every `finally`, which stops the stacks

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    rows = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows, args)
    (args.out / "chaos.md").write_text(table)
    print(table)
    say(f"done in {time.monotonic() - started:.0f}s: {args.out / 'chaos.json'}, {args.out / 'chaos.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
