"""`make bench-sim`: the live stack and `supernode sim` on one small scenario, then the simulation's speed.

Agreement: the mixed workload (Poisson arrivals, multi-turn sessions with prefix reuse, log-normal
lengths), a few hundred requests, on the live topology `make run` starts (2 prefill instances of 16
NPUs, one decode service emulating a 2-die slice of the EP320 instance) and on the same deployment
simulated. The live stack runs at each given time scale (default 1.0, then 0.25): what is left of its
host's own work on a request's path (the hops the step loop cannot absorb) is wall time, so it shows
as `wall ms x time scale` of emulated time, which the simulation leaves out by design. Writes
reports/sim_check.json: `rows` (metric, live, sim, error_pct) at the smallest time scale, `runs` (the
rows at each), and, from two or more time scales, the fit `live TTFT - sim TTFT = c + w x time_scale`
(`ttft_fit`: w, the host's wall ms per request left on the first token's path, and c, the gap left at
time scale 0).

Speed: the mixed workload on the paper's whole deployment (6 x 16-NPU prefill, one 160-NPU decode
instance with all 320 dies, the EMS pool), 100,000 requests by default as the target is stated;
`sim_requests_per_s` (requests per wall second), `sim_cpu_us_per_request` (this process's CPU time per
request: the figure to read on a shared host), `sim_peak_rss_mb` and the request count they were
measured with are merged into reports/bench.json (other figures there are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from supernode.launcher import LocalStack, StackConfig
from supernode.loadgen.scenarios import BenchConfig, preset
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import run_suite
from supernode.loadgen.targets import SdkTarget
from supernode.sim.deployment import SimDeployment
from supernode.sim.run import SimOptions, simulate

REPORTS = Path("reports")
METRICS = ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "mean_e2el_ms", "cache_hit_rate")
SLICE = SimDeployment(num_prefill=2, prefill_npus=16, num_decode=1, decode_npus=160, decode_dies=2)


def scenario(num_requests: int, seed: int) -> BenchConfig:
    dep = Deployment(SLICE.num_prefill_npus, SLICE.num_decode_npus)
    return preset("mixed", dep).override(num_requests=num_requests, seed=seed)


async def run_live(cfg: BenchConfig, time_scale: float, folder: Path) -> dict[str, Any]:
    env = {"SUPERNODE_RUNTIME__TIME_SCALE": str(time_scale), "SUPERNODE_RUNTIME__LOG_LEVEL": "WARNING"}
    stack = LocalStack(StackConfig(num_prefill=2, num_decode=1, ephemeral_ports=True, env=env))
    await stack.start()
    try:
        async with SdkTarget(stack.router_address, time_scale) as target:
            dep = Deployment(SLICE.num_prefill_npus, SLICE.num_decode_npus)
            outcome = await run_suite(cfg, target, "live", dep, time_scale, folder, write_pngs=False)
        return outcome.results
    finally:
        stack.stop()


def rows(live: dict[str, Any], sim: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for metric in METRICS:
        a, b = float(live[metric]), float(sim[metric])
        out.append({"metric": metric, "live": a, "sim": b, "error_pct": 100 * (b - a) / a if a else 0.0})
    return out


def speed(num_requests: int, seed: int) -> dict[str, float]:
    dep = SimDeployment()
    cfg = preset("mixed", Deployment(dep.num_prefill_npus, dep.num_decode_npus)).override(
        num_requests=num_requests, seed=seed
    )
    out = simulate(cfg, dep, Path(tempfile.mkdtemp(prefix="sim-speed-")), SimOptions(write_pngs=False))
    return {
        "sim_requests_per_s": out.sim["sim_requests_per_s"],
        "sim_cpu_us_per_request": out.sim["sim_cpu_us_per_request"],
        "sim_peak_rss_mb": out.sim["sim_peak_rss_mb"],
        "sim_speed_num_requests": float(num_requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=200, help="requests in the agreement scenario")
    parser.add_argument(
        "--time-scale", default="1.0,0.25", help="the live stack's time scale(s), comma-separated"
    )
    parser.add_argument("--speed-requests", type=int, default=100_000, help="requests in the speed run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed-only", action="store_true", help="skip the live agreement check")
    args = parser.parse_args()
    REPORTS.mkdir(exist_ok=True)
    if not args.speed_only:
        scales = [float(s) for s in args.time_scale.split(",") if s.strip()]
        if not scales or any(not 0 < s <= 1 for s in scales):
            parser.error("--time-scale: give one or more values in (0, 1]")
        check(args.num_requests, scales, args.seed)
    figures = speed(args.speed_requests, args.seed)
    bench = REPORTS / "bench.json"
    merged = json.loads(bench.read_text()) if bench.exists() else {}
    merged.update(figures)
    bench.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(", ".join(f"{k} = {v:.6g}" for k, v in figures.items()))


def check(num_requests: int, time_scales: list[float], seed: int) -> None:
    """The live stack (at each time scale) and the simulation on one small scenario ->
    reports/sim_check.json."""
    cfg = scenario(num_requests, seed)
    work = Path(tempfile.mkdtemp(prefix="sim-check-"))
    sim = simulate(cfg, SLICE, work / "sim", SimOptions(write_pngs=False)).suite.results
    runs = []
    for scale in sorted(time_scales, reverse=True):
        folder = work / f"live-{scale:g}"
        folder.mkdir()
        print(f"live stack at time scale {scale:g} ({num_requests} requests) ...", flush=True)
        live = asyncio.run(run_live(cfg, scale, folder))
        runs.append({"time_scale": scale, "live_failed": live["failed"], "rows": rows(live, sim)})
        for row in runs[-1]["rows"]:
            metric, live_v, sim_v, err = row["metric"], row["live"], row["sim"], row["error_pct"]
            print(f"{metric:>14}  live {live_v:10.2f}  sim {sim_v:10.2f}  {err:+6.1f}%")
    headline = runs[-1]  # the smallest time scale: the least host time in the live figures
    report = {
        "scenario": cfg.description, "num_requests": num_requests, "time_scale": headline["time_scale"],
        "live_failed": headline["live_failed"], "sim_failed": sim["failed"], "rows": headline["rows"],
        "runs": runs, "ttft_fit": ttft_fit(runs),
    }  # fmt: skip
    if report["ttft_fit"]:
        fit = report["ttft_fit"]
        print(
            f"live - sim mean TTFT = {fit['c_ms']:.2f} ms + {fit['w_wall_ms']:.1f} wall ms x time scale; "
            f"at time scale 0: {fit['error_pct_at_0']:+.1f}%"
        )
    REPORTS.mkdir(exist_ok=True)  # also when called on its own, not through main()
    (REPORTS / "sim_check.json").write_text(json.dumps(report, indent=2) + "\n")


def ttft_fit(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares of the mean-TTFT gap over the time scales: `gap_ms = c + w x time_scale`, where w
    is the host's wall ms per request on the first token's path and c the gap no time scale removes;
    empty with fewer than two time scales."""
    if len({r["time_scale"] for r in runs}) < 2:
        return {}
    points = []
    for run in runs:
        row = next(r for r in run["rows"] if r["metric"] == "mean_ttft_ms")
        points.append((run["time_scale"], row["live"] - row["sim"], row["sim"]))
    n = len(points)
    mean_x = sum(x for x, _, _ in points) / n
    mean_y = sum(y for _, y, _ in points) / n
    w = sum((x - mean_x) * (y - mean_y) for x, y, _ in points) / sum((x - mean_x) ** 2 for x, _, _ in points)
    c = mean_y - w * mean_x
    sim_ms = points[0][2]
    return {"w_wall_ms": w, "c_ms": c, "error_pct_at_0": 100 * (sim_ms - (sim_ms + c)) / (sim_ms + c)}


if __name__ == "__main__":
    main()
