"""Samples the in-process cluster on its clock: queues, batches, KV and pool occupancy, utilisation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supernode.core.topology import DIES_PER_NODE
from supernode.decode.engine import DecodeEngine
from supernode.inproc import InprocCluster
from supernode.prefill.engine import PrefillEngine


@dataclass(slots=True)
class Series:
    t_s: list[float] = field(default_factory=list)  # emulated s since the run started
    router_inflight: list[int] = field(default_factory=list)  # requests in the router
    prefill_queue: list[int] = field(default_factory=list)  # requests waiting over every prefill instance
    decode_running: list[int] = field(default_factory=list)  # sequences in decode batches
    decode_queue: list[int] = field(default_factory=list)  # reserved or waiting for a decode slot
    decode_kv_used: list[float] = field(default_factory=list)  # reserved KV / capacity, every decode instance
    pool_used: list[float] = field(default_factory=list)  # pool bytes / cap (nominal EMS occupancy)


class Observer:
    def __init__(self, cluster: InprocCluster, interval_s: float, on_sample: Callable[[float], None]) -> None:
        self.cluster = cluster
        self.interval_s = interval_s  # emulated s between samples
        self.on_sample = on_sample  # told the emulated time of each sample (progress bar)
        self.series = Series()
        self.started_s = 0.0
        self.placement: dict[str, list[int]] = {}  # instance -> the nodes its dies sit on
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts sampling; the cluster has started (its instances hold their dies)."""
        self.started_s = self.cluster.clock.now()
        leases = self.cluster.fabric.leases.leases
        self.placement = {worker_id: _nodes(leases[worker_id].dies) for worker_id in sorted(leases)}
        self._task = asyncio.create_task(self._run(), name="sim-observer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    async def _run(self) -> None:
        while True:
            self.sample()
            await self.cluster.clock.sleep(self.interval_s)

    def sample(self) -> None:
        c, s = self.cluster, self.series
        t = c.clock.now() - self.started_s
        s.t_s.append(t)
        s.router_inflight.append(c.router.num_inflight)
        s.prefill_queue.append(sum(len(p.scheduler.waiting) for p in c.prefills))
        s.decode_running.append(sum(d.scheduler.num_running for d in c.decodes))
        s.decode_queue.append(sum(len(d.scheduler.waiting) + len(d.reserved) for d in c.decodes))
        used = sum(d.scheduler.num_kv_reserved for d in c.decodes)
        capacity = sum(d.scheduler.kv_capacity * d.scheduler.num_dies for d in c.decodes)
        s.decode_kv_used.append(used / capacity if capacity else 0.0)
        store = c.pool.store
        cap = getattr(store, "max_bytes", 0)
        s.pool_used.append(getattr(store, "_bytes", 0) / cap if cap else 0.0)
        self.on_sample(t)

    def summary(self, duration_s: float) -> dict[str, Any]:
        """Per-instance utilisation (busy share of the run) and the peaks of each series."""
        c, s = self.cluster, self.series
        busy_s: dict[str, float] = {}
        steps: dict[str, int] = {}
        # An instance killed and restarted ran on two engines: its figures are their sums.
        engines: list[PrefillEngine | DecodeEngine] = [*c.prefills, *c.decodes, *c.retired]
        for e in engines:
            busy_s[e.worker_id] = busy_s.get(e.worker_id, 0.0) + e.loop.stats.busy_s
            steps[e.worker_id] = steps.get(e.worker_id, 0) + e.loop.stats.num_steps
        return {
            "sim_duration_s": duration_s,
            "instance_utilisation": {w: b / duration_s if duration_s > 0 else 0.0 for w, b in busy_s.items()},
            "instance_steps": steps,
            "instance_nodes": self.placement,  # what a `--fault node-<n>:...` takes down with it
            "peak_router_inflight": max(s.router_inflight, default=0),
            "peak_prefill_queue": max(s.prefill_queue, default=0),
            "peak_decode_running": max(s.decode_running, default=0),
            "peak_decode_queue": max(s.decode_queue, default=0),
            "peak_decode_kv_used": max(s.decode_kv_used, default=0.0),
            "peak_pool_used": max(s.pool_used, default=0.0),
            "pool_blocks_evicted": getattr(c.pool.store, "_evicted", 0),
        }


def _nodes(dies: list[int]) -> list[int]:
    return sorted({die // DIES_PER_NODE for die in dies})


def write_occupancy_plot(series: Series, path: Any) -> None:
    """occupancy.png: queue lengths, decode batch and KV / pool occupancy over emulated time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(series.t_s, series.router_inflight, label="router in flight")
    axes[0].plot(series.t_s, series.prefill_queue, label="prefill queue")
    axes[0].plot(series.t_s, series.decode_queue, label="decode queue")
    axes[0].set_ylabel("requests")
    axes[1].plot(series.t_s, series.decode_running, label="decode batch (all dies)")
    axes[1].set_ylabel("sequences")
    axes[2].plot(series.t_s, [100 * x for x in series.decode_kv_used], label="decode KV reserved")
    axes[2].plot(series.t_s, [100 * x for x in series.pool_used], label="EMS pool")
    axes[2].set_ylabel("occupancy (%)")
    axes[2].set_xlabel("emulated time (s)")
    for ax in axes:
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
