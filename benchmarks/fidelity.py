"""`make bench-fidelity`: the live stack against the cost model at the paper's operating points.

Starts the real topology (redis-server and every service as processes), drives it through the SDK and
measures in emulated time; writes reports/fidelity.json (rows: scenario, metric, measured, model,
error_pct) and reports/fidelity.md. Scenarios:

- decode-b96-kv4k / decode-b8-kv4k (benchmarks/fidelity_decode.py): a closed loop keeps a full batch
  waiting behind the running one, so every die holds the chosen batch; over a fixed emulated window
  of steady state, decode tokens/s per NPU and the median TPOT while in the batch of the requests
  decoded entirely inside the window (first decode chunk to last; not the wait for a batch slot, nor
  the batch filling up or draining).
- prefill-4k (benchmarks/fidelity_prefill.py): 4,096-token prompts, three batches of 16,384 tokens per
  NPU on 16 NPUs, queued at once behind a gate prompt (so the host's arrival spread does not cut
  other batches than the model's); prefill tokens/s per NPU and mean TTFT from the gate's end, next
  to the model's answer for the same prompts (the pure prefill scheduler forms the batches, the
  cost model prices them).
- prefill-cache-50/90: the same prompts with 50 / 90% of each a cached shared prefix.

It also reports how the host kept up (benchmarks/fidelity_host.py: step-loop lag, idle share, CPU per
service, what the worker ran) and measures each scenario at the largest `time_scale` (1, 1/2, 1/4,
1/10, 1/20, 1/50) at which the host delivered its point: step loop lagging under 2%, decode batch full,
prefill burst queued in time and its answers carried back within 2% of its time. The smallest of
those scales goes into reports/bench.json as `live_fidelity_time_scale`; `live_max_time_scale` keeps
its own, narrower meaning: the largest scale tried at which every scenario's step loop lagged under 2%
(the step times the stack produced are the cost model's, whether or not the host also kept the
batch full and carried the answers back in time).
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.fidelity_decode import decode_scenario
from benchmarks.fidelity_host import IDLE_LIMIT_PCT, LAG_LIMIT_PCT, HostUse, max_time_scale, merge_bench
from benchmarks.fidelity_model import BLOCK, ideal_prefill, shared_prefix_load_s, unique_prompt
from benchmarks.fidelity_prefill import prefill_scenario
from benchmarks.fidelity_report import REPORTS, Row, write

__all__ = ["BLOCK", "REPORTS", "Row", "ideal_prefill", "shared_prefix_load_s", "unique_prompt"]


SCALES = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02)  # time scales tried, fastest first
DECODE = {"decode-b96-kv4k": 48, "decode-b8-kv4k": 4}  # batch per die (96 and 8 per NPU)
DECODE_MIN_SCALE = 0.1  # slowest time scale tried for decode
PREFILL = {"prefill-4k": 0.0, "prefill-cache-50": 0.5, "prefill-cache-90": 0.9}  # cached share


async def run_one(name: str, scale: float, quick: bool) -> tuple[list[Row], HostUse]:
    print(f"fidelity: {name} (time_scale {scale}) ...", flush=True)
    if name in DECODE:  # emulated s of steady state: several request lifetimes (6.3 s at batch 96)
        return await decode_scenario(name, DECODE[name], 4096, 128, scale, 12.0 if quick else 24.0)
    return await prefill_scenario(name, PREFILL[name], scale, 2 if quick else 3)


def measure(name: str, scales: list[float], quick: bool) -> tuple[list[Row], HostUse, float, float]:
    """`name` at the fastest of `scales` at which the host kept up (else the slowest), that scale, and
    the fastest scale tried at which the step loop lagged under 2% (0 when none)."""
    worth = scales[0]  # the fastest scale still worth a try
    on_plan = 0.0
    for scale in scales:
        if scale > worth:
            continue
        rows, use = asyncio.run(run_one(name, scale, quick))
        if use.lag_pct < LAG_LIMIT_PCT:
            on_plan = max(on_plan, scale)
        if use.kept_up:
            break
        why = use.problem or f"the step loop lagged {use.lag_pct:.1f}%"
        print(f"fidelity: {name}: {why} at time_scale {scale}", flush=True)
        if use.idle_pct >= IDLE_LIMIT_PCT and use.lag_pct < LAG_LIMIT_PCT:
            # The answers' host time is about fixed in wall seconds, so its share falls with the
            # scale: skip the scales it would still fail at.
            target = scale * IDLE_LIMIT_PCT / use.idle_pct
            worth = max((s for s in scales if s <= target), default=scales[-1])
    return rows, use, scale, on_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.0, help="fixed time_scale (0 = pick one)")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    args = parser.parse_args()
    scales = [args.time_scale] if args.time_scale else list(SCALES)
    only = {name for name in args.only.split(",") if name}
    unknown = only - DECODE.keys() - PREFILL.keys()
    if unknown:
        parser.error(f"--only: unknown scenario(s) {sorted(unknown)}; choose from {[*DECODE, *PREFILL]}")
    rows: list[Row] = []
    uses: dict[str, HostUse] = {}
    ran: dict[str, float] = {}  # scenario -> the time scale it was measured at
    on_plan: dict[str, float] = {}  # scenario -> the fastest scale at which its step loop kept its plan
    for name in [*DECODE, *PREFILL]:
        if not only or name in only:
            # A decode window lasts 24 emulated s: below 1/10 it would take many wall minutes.
            tried = (
                ([x for x in scales if x >= DECODE_MIN_SCALE] or scales[-1:]) if name in DECODE else scales
            )
            got, uses[name], ran[name], on_plan[name] = measure(name, tried, args.quick)
            rows += got
    write(rows, uses, ran)
    print(f"wrote {REPORTS / 'fidelity.json'} and {REPORTS / 'fidelity.md'}")
    best = max_time_scale({name: s if uses[name].kept_up else 0.0 for name, s in ran.items()})
    lag_best = max_time_scale(on_plan)
    if not only and (best or not args.time_scale):  # every scenario, and a scale found (or none at all)
        figures = {"live_fidelity_time_scale": best, "live_max_time_scale": lag_best}
        merge_bench(REPORTS / "bench.json", figures)
        print(", ".join(f"{k} = {v}" for k, v in figures.items()) + " (reports/bench.json)")


if __name__ == "__main__":
    main()
