"""How well the host kept up during a fidelity scenario: step-loop lag, idle share and CPU per service.

- **lag**: emulated seconds the worker's step loop ran behind its plan (each busy spell's overrun,
  `supernode_<role>_step_lag_total_seconds`) over the emulated seconds of the steps it ran, in percent.
  Under 2% the emulated step times are what the host delivered; `live_max_time_scale` is the largest
  time scale at which every scenario stays under that.
- **idle**: the share of the window in which the step loop had nothing to run. For a prefill burst
  (timed from the end of the gate it queued behind, to the last answer: benchmarks/fidelity_prefill.py)
  that is the host carrying the answers back (pool writes, router, client), which the model does not
  have: it is a pass mark there, under 2%. For decode the window is steady state and idle is ~0.
- **what the worker ran**: the realised decode batch per die (under 99% of the chosen batch the host
  did not keep it full), the prefill burst's batches against the model's (the burst queued in time).
- **cores at 1x**: CPU seconds every service process used over the window per emulated second, i.e. how
  many host cores the scenario needs at time scale 1.0. It is read from /proc, so it holds on a
  machine shared with other work, where wall-clock figures do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from supernode.launcher import LocalStack
from supernode.processes import cpu_s

LAG_LIMIT_PCT = 2.0  # a scenario "keeps up" while its step loop lags less than this
IDLE_LIMIT_PCT = 2.0  # ... and a prefill burst's host time on the path (its idle share) is under this


@dataclass
class HostUse:
    """One scenario's host figures (percent, cores, milliseconds)."""

    lag_pct: float = 0.0
    idle_pct: float = 0.0
    cores_at_1x: float = 0.0  # CPU s of every service per emulated s
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)  # per service, when requests counted
    shape: str = ""  # what the worker really ran (decode: realised batch; prefill: the burst's batches)
    problem: str = ""  # why the run did not measure the model's point at this time scale ("" = it did)

    @property
    def kept_up(self) -> bool:
        """The host delivered the scenario's point: step loop on plan, and no other shortfall."""
        return self.lag_pct < LAG_LIMIT_PCT and not self.problem


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone or /proc is missing)."""
    try:
        return cpu_s(pid)
    except OSError:
        return 0.0


def stack_cpu(stack: LocalStack) -> dict[str, float]:
    """CPU seconds so far of every service process of `stack`, by name."""
    return {proc.name: cpu_seconds(proc.popen.pid) for proc in stack.procs}


def host_use(
    before: dict[str, float], after: dict[str, float], cpu0: dict[str, float], cpu1: dict[str, float],
    role: str, wall_s: float, scale: float, num_requests: int = 0,
) -> HostUse:  # fmt: skip
    """The figures of one window from two scrapes of the worker's metrics and two CPU samples."""
    busy = _delta(before, after, f"supernode_{role}_step_seconds_sum")
    # The running spell's lag can shrink as the loop catches up, so a window's difference can dip below 0.
    lag = max(0.0, _delta(before, after, f"supernode_{role}_step_lag_total_seconds"))
    emulated_s = wall_s * scale
    cpu = {name: cpu1.get(name, 0.0) - cpu0.get(name, 0.0) for name in cpu0}
    per_request = {k: 1e3 * v / num_requests for k, v in cpu.items()} if num_requests else {}
    return HostUse(
        lag_pct=100.0 * lag / busy if busy > 0 else 0.0,
        idle_pct=100.0 * max(0.0, emulated_s - busy - lag) / emulated_s if emulated_s > 0 else 0.0,
        cores_at_1x=sum(cpu.values()) / emulated_s if emulated_s > 0 else 0.0,
        cpu_ms_per_request=per_request,
    )


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def max_time_scale(scales: dict[str, float]) -> float:
    """The largest time scale at which every scenario passed (`live_fidelity_time_scale`: kept up;
    `live_max_time_scale`: step loop on plan), from each scenario's largest such scale (0 when one
    passed at none)."""
    return min(scales.values(), default=0.0)


def merge_bench(path: Path, figures: dict[str, float]) -> None:
    """Merges named figures into reports/bench.json (one flat object), keeping the others."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(figures)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def markdown(uses: dict[str, HostUse]) -> list[str]:
    """The host table of reports/fidelity.md."""
    services = sorted({name for use in uses.values() for name in use.cpu_ms_per_request})
    head = "| scenario | step-loop lag (%) | idle (%) | cores at 1x |"
    head += "".join(f" {s} CPU ms/request |" for s in services)
    lines = [head, "|---" * (4 + len(services)) + "|"]
    shapes = [f"- {name}: {use.shape}" for name, use in uses.items() if use.shape]
    for name, use in uses.items():
        row = f"| {name} | {use.lag_pct:.2f} | {use.idle_pct:.1f} | {use.cores_at_1x:.2f} |"
        row += "".join(f" {use.cpu_ms_per_request.get(s, 0.0):.2f} |" if use.cpu_ms_per_request else " - |"
                       for s in services)  # fmt: skip
        lines.append(row)
    if shapes:
        lines += ["", "What the worker ran in the measured window:", "", *shapes]
    return lines
