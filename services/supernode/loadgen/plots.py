"""PNG plots of a load run, drawn with matplotlib's Agg backend (no display needed).

latency_cdf.png: TTFT, TPOT, ITL, E2E CDFs, one curve per run point, SLO bounds dashed.
timeline.png: output tokens/s, decode batch and requests in flight over emulated time.
sweep.png (sweeps only): throughput and goodput per SLO, and mean/p99 latencies, against the swept value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from supernode.loadgen.bench import PointReport  # noqa: E402
from supernode.loadgen.stats import Slo  # noqa: E402

AXIS_LABELS = {
    "request_rate": "target request rate (req/s)",
    "concurrency": "concurrency (requests in flight)",
    "reuse_ratio": "prefix reuse ratio",
}


def _cdf(ax: Axes, values_ms: Sequence[float], label: str) -> None:
    if not values_ms:
        return
    xs = sorted(values_ms)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=label)


def latency_cdfs(reports: Sequence[PointReport], slos: Sequence[Slo], path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    panels = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("end-to-end latency", "e2e"))
    for ax, (title, key) in zip(axes.flat, panels, strict=True):
        for rep in reports:
            _cdf(ax, _latencies_ms(rep, key), rep.point.label)
        for slo in slos:
            bound = slo.ttft_ms if key == "ttft" else slo.tpot_ms if key == "tpot" else None
            if bound is not None:
                ax.axvline(bound, linestyle="--", color="grey", linewidth=1, label=f"SLO {bound:g} ms")
        ax.set(
            title=f"{title} CDF",
            xlabel=f"{title} (ms, emulated)",
            ylabel="fraction of requests",
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latencies_ms(rep: PointReport, key: str) -> list[float]:
    ok = [r for r in rep.results if r.is_ok]
    if key == "ttft":
        return [r.ttft_s * 1000 for r in ok]
    if key == "tpot":
        return [r.tpot_s * 1000 for r in ok if r.num_output_tokens > 1]
    if key == "itl":
        return [x * 1000 for r in ok for x in r.itl_s]
    return [r.e2e_s * 1000 for r in ok]


def timelines(reports: Sequence[PointReport], path: Path) -> Path:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, constrained_layout=True)
    for rep in reports:
        tl = rep.timeline
        top.plot(tl.t_s, tl.output_tokens_per_s, label=rep.point.label)
        (line,) = bottom.plot(tl.t_s, tl.decode_batch, label=f"{rep.point.label}: in decode")
        bottom.plot(
            tl.t_s, tl.in_flight, linestyle=":", color=line.get_color(), label=f"{rep.point.label}: in flight"
        )
    top.set(title="Output token throughput over time", ylabel="output tokens/s")
    bottom.set(title="Batch size over time (client view)", xlabel="time since run start (s, emulated)")
    bottom.set_ylabel("requests")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small", ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep(reports: Sequence[PointReport], axis: str, path: Path) -> Path:
    xs = [_axis_value(rep, axis) for rep in reports]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    left.plot(
        xs, [_num(rep, "request_throughput") for rep in reports], marker="o", label="request throughput"
    )
    for slo in reports[0].metrics.get("goodput") or {}:
        ys = [float((rep.metrics.get("goodput") or {}).get(slo, 0.0)) for rep in reports]
        left.plot(xs, ys, marker="s", linestyle="--", label=f"goodput {slo}")
    left.set(
        title=f"Goodput vs {AXIS_LABELS[axis]}", xlabel=AXIS_LABELS[axis], ylabel="requests/s (emulated)"
    )
    for key, label in (("mean_ttft_ms", "mean TTFT"), ("p99_ttft_ms", "p99 TTFT")):
        right.plot(xs, [_num(rep, key) for rep in reports], marker="o", label=label)
    right.set(title="Latency vs load", xlabel=AXIS_LABELS[axis], ylabel="TTFT (ms, emulated)")
    twin = right.twinx()
    twin.plot(
        xs, [_num(rep, "mean_tpot_ms") for rep in reports], marker="^", color="tab:red", label="mean TPOT"
    )
    twin.set_ylabel("TPOT (ms, emulated)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize="small")
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles, [str(h.get_label()) for h in handles], fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _axis_value(rep: PointReport, axis: str) -> float:
    point = rep.point
    value = {"request_rate": point.request_rate, "concurrency": point.concurrency}.get(
        axis, point.reuse_ratio
    )
    return float(value or 0.0)


def _num(rep: PointReport, key: str) -> float:
    value = rep.metrics.get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def write_plots(
    reports: Sequence[PointReport], slos: Sequence[Slo], axis: str | None, folder: Path
) -> list[str]:
    """Write every plot into `folder`; returns the file names."""
    paths = [
        latency_cdfs(reports, slos, folder / "latency_cdf.png"),
        timelines(reports, folder / "timeline.png"),
    ]
    if axis is not None and len(reports) > 1:
        paths.append(sweep(reports, axis, folder / "sweep.png"))
    return [p.name for p in paths]
