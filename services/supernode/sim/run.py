"""Runs a `supernode bench` configuration against the in-process cluster on virtual time.

The load generator is reused as is (scenarios, workloads, arrivals, sessions, traces, metrics, report):
on the virtual-time loop its `asyncio.sleep` waits are emulated, and its wall-clock stamps are taken
from the loop's clock, so every "wall" figure it writes is emulated time (time_scale 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from supernode.decode.stepping import MAX_STEPS_PER_BATCH
from supernode.inproc import InprocCluster
from supernode.loadgen import bench, runner
from supernode.loadgen.records import RequestSpec
from supernode.loadgen.scenarios import BenchConfig, RunPoint
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import Progress, SuiteOutcome, run_suite
from supernode.sim import faults
from supernode.sim.deployment import SimDeployment
from supernode.sim.faults import FaultSpec
from supernode.sim.loop import LoopClock, run_virtual
from supernode.sim.observer import Observer, Series, write_occupancy_plot
from supernode.sim.target import InprocTarget


@dataclass(frozen=True, slots=True)
class SimOptions:
    materialise_tokens: bool = False  # draw every output token (False: count them only)
    until_s: float = 0.0  # drop arrivals after this emulated instant (0 = none)
    sample_s: float = 1.0  # emulated s between occupancy samples
    write_pngs: bool = True
    exact_steps: bool = False  # price every decode step (False: runs of steps at once, decode/stepping.py)
    faults: tuple[FaultSpec, ...] = ()  # injected at their emulated instants (sim/faults.py)


@dataclass(frozen=True, slots=True)
class SimOutcome:
    suite: SuiteOutcome
    sim: dict[str, Any]  # what results.json's "sim" object holds
    tokens: dict[str, list[int]]  # request id -> output tokens (with materialise_tokens)
    series: Series  # occupancy over emulated time


def simulate(
    cfg: BenchConfig, dep: SimDeployment, folder: Path, options: SimOptions,
    progress: Progress | None = None, on_time: Callable[[float], None] = lambda _: None,
) -> SimOutcome:  # fmt: skip
    """Runs every point of `cfg` on `dep` and writes the run folder (the bench's files plus the sim's)."""
    faults.check_faults(
        options.faults, dep.num_prefill, dep.num_decode, dep.num_nodes, options.materialise_tokens
    )
    folder.mkdir(parents=True, exist_ok=True)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    outcome = run_virtual(_simulate(cfg, dep, folder, options, progress, on_time))
    # The simulation's time, not the report's: drawing the plots can take longer than a short run.
    wall_s = time.perf_counter() - wall_start - outcome.suite.write_wall_s
    cpu_s = time.process_time() - cpu_start - outcome.suite.write_cpu_s
    num = sum(len(r.results) for r in outcome.suite.reports)
    outcome.sim.update(
        sim_wall_s=wall_s,
        sim_cpu_s=cpu_s,  # this process's CPU time: the figure to trust on a shared host
        sim_cpu_us_per_request=1e6 * cpu_s / num if num else 0.0,
        sim_requests_per_s=num / wall_s if wall_s > 0 else 0.0,
        sim_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    _write(folder, outcome, options)
    return outcome


async def _simulate(
    cfg: BenchConfig, dep: SimDeployment, folder: Path, options: SimOptions, progress: Progress | None,
    on_time: Callable[[float], None],
) -> SimOutcome:  # fmt: skip
    loop = asyncio.get_running_loop()
    cluster = InprocCluster(
        dep.settings(),
        LoopClock(loop),
        dep.shape(),
        materialise_tokens=options.materialise_tokens,
        max_steps_per_batch=1 if options.exact_steps else MAX_STEPS_PER_BATCH,
        faultable={f.target for f in options.faults if f.role != "node"},
    )
    cluster.mute_metrics()
    target = InprocTarget(
        cluster, keep_itl=options.materialise_tokens, keep_tokens=options.materialise_tokens
    )
    observer = Observer(cluster, options.sample_s, on_time)
    deployment = Deployment(dep.num_prefill_npus, dep.num_decode_npus)
    started = loop.time()
    applied: list[dict[str, Any]] = []
    with _loadgen_on(loop, options.until_s):
        async with target:
            observer.start()
            injector = asyncio.create_task(faults.inject(cluster, options.faults, started, applied))
            try:
                suite = await run_suite(
                    cfg, target, "sim", deployment, 1.0, folder, None, progress, options.write_pngs
                )
            finally:
                injector.cancel()
            await observer.stop()
    summary = observer.summary(loop.time() - started)
    if options.faults:
        summary["faults"] = applied
        done = {entry["fault"] for entry in applied}
        summary["faults_not_reached"] = [str(f) for f in options.faults if str(f) not in done]
        summary["requests_migrated"] = target.num_migrated
        summary["migrations"] = target.num_migrations
    summary["deployment"] = asdict(dep)
    summary["materialise_tokens"] = options.materialise_tokens
    summary["exact_steps"] = options.exact_steps
    return SimOutcome(suite, summary, target.tokens, observer.series)


@contextlib.contextmanager
def _loadgen_on(loop: asyncio.AbstractEventLoop, until_s: float) -> Iterator[None]:
    """The load generator's view during a simulation: its clock is the loop's, and arrivals after
    `until_s` are dropped."""
    real_time, real_build = runner.time, bench.build_specs

    def build(cfg: BenchConfig, point: RunPoint) -> list[RequestSpec]:
        specs = real_build(cfg, point)
        return [s for s in specs if s.arrival_s <= until_s] if until_s > 0 else specs

    runner.time = SimpleNamespace(perf_counter=loop.time)  # type: ignore[assignment]
    bench.build_specs = build
    try:
        yield
    finally:
        runner.time, bench.build_specs = real_time, real_build


def _write(folder: Path, outcome: SimOutcome, options: SimOptions) -> None:
    """Adds the sim's figures to results.json and summary.md, and its occupancy series and plot."""
    results_path = folder / "results.json"
    results = json.loads(results_path.read_text())
    results["sim"] = outcome.sim
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    s = outcome.sim
    lines = ["", "## Simulation", "",
             f"- simulated {s['sim_duration_s']:.1f} emulated s in {s['sim_wall_s']:.1f} wall s "
             f"({s['sim_requests_per_s']:.0f} requests per wall second, "
             f"{s['sim_cpu_us_per_request']:.0f} CPU us per request, "
             f"peak RSS {s['sim_peak_rss_mb']:.0f} MB)",
             f"- peak router in flight {s['peak_router_inflight']}, prefill queue {s['peak_prefill_queue']}, "
             f"decode batch {s['peak_decode_running']}, decode queue {s['peak_decode_queue']}",
             f"- peak decode KV reserved {100 * s['peak_decode_kv_used']:.1f}%, EMS pool "
             f"{100 * s['peak_pool_used']:.1f}% ({s['pool_blocks_evicted']} blocks evicted)",
             "", "| instance | utilisation | steps | nodes |", "|---|---|---|---|"]  # fmt: skip
    for name, share in s["instance_utilisation"].items():
        nodes = _spans(s["instance_nodes"].get(name, []))
        lines.append(f"| {name} | {100 * share:.1f}% | {s['instance_steps'][name]} | {nodes} |")
    if "faults" in s:
        lines += ["", f"Faults injected ({s['requests_migrated']} requests moved to another decode "
                      f"instance, {s['migrations']} moves):", ""]  # fmt: skip
        lines += [f"- {faults.describe(entry)}" for entry in s["faults"]]
        lines += [f"- {f}: not reached (the run ended first)" for f in s["faults_not_reached"]]
    with (folder / "summary.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    (folder / "sim_series.json").write_text(json.dumps(asdict(outcome.series)))
    if options.write_pngs:
        write_occupancy_plot(outcome.series, folder / "occupancy.png")


def _spans(nodes: list[int]) -> str:
    """Sorted node numbers as ranges: [0, 1, 2, 5] -> "0-2, 5"."""
    runs: list[list[int]] = []
    for node in nodes:
        if runs and node == runs[-1][-1] + 1:
            runs[-1].append(node)
        else:
            runs.append([node])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
