"""Prometheus metrics of a prefill or decode worker, in emulated time, on the worker's metrics port.

Names (label `worker`): batch size and queue length, step time and its per-part breakdown, KV in use,
tokens per second (instance and per NPU), and for prefill the context-cache hits, misses, loaded bytes
and hit rate. Once `on_config` says what the instance holds, also KV capacity
(`supernode_<role>_kv_{tokens,blocks}_capacity`) and, under vLLM's names with labels `model_name` and
`engine` (the worker id): `vllm:kv_cache_usage_perc` (fraction of KV capacity reserved or held, 0..1)
and, with MTP on, `vllm:spec_decode_num_drafts_total`, `vllm:spec_decode_num_draft_tokens_total`,
`vllm:spec_decode_num_accepted_tokens_total`.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from supernode.runtime.config import Settings
from supernode.runtime.engine import StepStats

# Emulated step times run from ~1 ms (tiny decode batch) to tens of seconds (chunked long prefill).
STEP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class WorkerMetrics:
    def __init__(self, role: str, worker_id: str, num_npus: float) -> None:
        self.registry = CollectorRegistry()
        self.num_npus = num_npus
        r, labels = self.registry, ("worker",)
        p = self.prefix = f"supernode_{role}"
        self.batch_size = Gauge(f"{p}_batch_size", "Sequences in the last step's batch", labels, registry=r)
        self.batch_per_die = Gauge(
            f"{p}_batch_per_die", "Sequences on the busiest die last step", labels, registry=r
        )
        self.queue_length = Gauge(f"{p}_queue_length", "Requests waiting to join a batch", labels, registry=r)
        self.step_seconds = Histogram(
            f"{p}_step_seconds", "Emulated duration of one step", labels, buckets=STEP_BUCKETS, registry=r
        )
        self.step_part_seconds = Counter(
            f"{p}_step_part_seconds", "Emulated step time by cost-model part", ("worker", "part"), registry=r
        )
        self.tokens = Counter(
            f"{p}_tokens", "Tokens computed (prefill) or emitted (decode)", labels, registry=r
        )
        self.tokens_per_s = Gauge(
            f"{p}_tokens_per_second", "Tokens per emulated second over the last step", labels, registry=r
        )
        self.tokens_per_s_per_npu = Gauge(
            f"{p}_tokens_per_second_per_npu",
            "Tokens per emulated second per NPU, last step",
            labels,
            registry=r,
        )
        self.kv_tokens_used = Gauge(f"{p}_kv_tokens_used", "KV tokens reserved or held", labels, registry=r)
        self.kv_blocks_used = Gauge(f"{p}_kv_blocks_used", "KV blocks reserved or held", labels, registry=r)
        self.lag_seconds = Gauge(
            f"{p}_step_lag_seconds",
            "Worst emulated-time overrun of a step (host too slow)",
            labels,
            registry=r,
        )
        self.worker = worker_id
        self._kv_capacity_tokens = 0
        self._spec: SpecDecodeMetrics | None = None
        self._kv_usage: Gauge | None = None
        # Each metric's child for this worker, bound once (labels() is slow on a per-step path); binding
        # also exports it (at zero) from start-up, not from the first step.
        self._batch_size = self.batch_size.labels(worker_id)
        self._batch_per_die = self.batch_per_die.labels(worker_id)
        self._queue_length = self.queue_length.labels(worker_id)
        self._step_seconds = self.step_seconds.labels(worker_id)
        self._tokens = self.tokens.labels(worker_id)
        self._tokens_per_s = self.tokens_per_s.labels(worker_id)
        self._tokens_per_s_per_npu = self.tokens_per_s_per_npu.labels(worker_id)
        self._kv_tokens_used = self.kv_tokens_used.labels(worker_id)
        self._kv_blocks_used = self.kv_blocks_used.labels(worker_id)
        self._lag_seconds = self.lag_seconds.labels(worker_id)
        self._parts: dict[str, Counter] = {}  # part -> its step_part_seconds child
        self.is_muted = False  # True: the per-step and per-request updates are skipped (see mute)

    def mute(self) -> None:
        """Stops the per-step, per-queue-change and per-lookup updates: for an in-process simulation,
        which serves no metrics port and reads the engines' state directly."""
        self.is_muted = True

    def on_step(
        self,
        batch_size: int,
        batch_per_die: int,
        duration_s: float,
        parts_us: Mapping[str, float],
        num_tokens: int,
    ) -> None:
        if self.is_muted:
            return
        self._batch_size.set(batch_size)
        self._batch_per_die.set(batch_per_die)
        self._step_seconds.observe(duration_s)
        for part, us in parts_us.items():
            if us > 0:
                child = self._parts.get(part)
                if child is None:
                    child = self._parts[part] = self.step_part_seconds.labels(self.worker, part)
                child.inc(us / 1e6)
        self._tokens.inc(num_tokens)
        if duration_s > 0:
            self._tokens_per_s.set(num_tokens / duration_s)
            self._tokens_per_s_per_npu.set(num_tokens / duration_s / self.num_npus)

        if self._spec is not None:
            self._spec.on_step(batch_size, num_tokens)

    def track_lag(self, stats: StepStats) -> None:
        """Exports the step loop's running lag total, read at scrape time."""
        gauge = Gauge(
            f"{self.prefix}_step_lag_total_seconds",
            "Emulated seconds the step loop ran behind its plan, summed (host too slow); "
            "over a window, divided by the step seconds, the loop's lag ratio",
            ("worker",),
            registry=self.registry,
        )
        gauge.labels(self.worker).set_function(lambda: stats.lag_total_s)

    def on_idle(self) -> None:
        """No batch runs: the per-step gauges read 0 rather than keep the last step's values."""
        if self.is_muted:
            return
        for gauge in (self._batch_size, self._batch_per_die, self._tokens_per_s, self._tokens_per_s_per_npu):
            gauge.set(0)

    def on_queue(self, waiting: int, kv_tokens: int, block_tokens: int, lag_s: float) -> None:
        if self.is_muted:
            return
        self._queue_length.set(waiting)
        self._kv_tokens_used.set(kv_tokens)
        self._kv_blocks_used.set(-(-kv_tokens // block_tokens))
        self._lag_seconds.set(lag_s)
        if self._kv_usage is not None and self._kv_capacity_tokens > 0:
            self._kv_usage.set(min(1.0, kv_tokens / self._kv_capacity_tokens))

    def on_config(
        self, *, model_name: str, kv_capacity_tokens: int, block_tokens: int, mtp_depth: int = 0
    ) -> None:
        """What the instance holds: KV capacity (tokens, all ranks) and MTP drafts per step."""
        r, p, w = self.registry, self.prefix, self.worker
        self._kv_capacity_tokens = kv_capacity_tokens
        Gauge(f"{p}_kv_tokens_capacity", "KV tokens the instance can hold", ["worker"], registry=r).labels(
            w
        ).set(kv_capacity_tokens)
        Gauge(f"{p}_kv_blocks_capacity", "KV blocks the instance can hold", ["worker"], registry=r).labels(
            w
        ).set(kv_capacity_tokens // block_tokens)
        self._kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage: 1 means every block is reserved or held.",
            ("model_name", "engine"), registry=r,
        ).labels(model_name, w)  # fmt: skip
        if mtp_depth > 0:
            self._spec = SpecDecodeMetrics(r, model_name, w, mtp_depth)


class SpecDecodeMetrics:
    """MTP as vLLM counts speculative decoding: each running sequence drafts `depth` tokens per step;
    every token a sequence emits beyond the first in a step is an accepted draft."""

    def __init__(self, registry: CollectorRegistry, model_name: str, engine: str, depth: int) -> None:
        labels = ("model_name", "engine")
        self.depth = depth
        self.drafts = Counter(
            "vllm:spec_decode_num_drafts", "Draft rounds (one per sequence per step).", labels,
            registry=registry,
        ).labels(model_name, engine)  # fmt: skip
        self.draft_tokens = Counter(
            "vllm:spec_decode_num_draft_tokens", "Tokens drafted.", labels, registry=registry
        ).labels(model_name, engine)
        self.accepted_tokens = Counter(
            "vllm:spec_decode_num_accepted_tokens", "Drafted tokens accepted.", labels, registry=registry
        ).labels(model_name, engine)

    def on_step(self, num_seqs: int, num_tokens: int) -> None:
        """A step of `num_seqs` sequences emitted `num_tokens` tokens in all."""
        self.drafts.inc(num_seqs)
        self.draft_tokens.inc(num_seqs * self.depth)
        self.accepted_tokens.inc(max(0, num_tokens - num_seqs))


class CacheMetrics:
    """Prefill context-cache counters (tokens, as vLLM counts prefix-cache queries and hits)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        r, w = metrics.registry, metrics.worker
        self.query_tokens = Counter(
            "supernode_prefill_cache_query_tokens", "Prompt tokens looked up", ["worker"], registry=r
        ).labels(w)
        self.hit_tokens = Counter(
            "supernode_prefill_cache_hit_tokens", "Prompt tokens found cached", ["worker"], registry=r
        ).labels(w)
        self.hit_blocks = Counter(
            "supernode_prefill_cache_hit_blocks", "Blocks found cached", ["worker"], registry=r
        ).labels(w)
        self.miss_blocks = Counter(
            "supernode_prefill_cache_miss_blocks", "Full blocks not cached", ["worker"], registry=r
        ).labels(w)
        self.loaded_bytes = Counter(
            "supernode_prefill_cache_loaded_bytes", "Nominal KV bytes loaded over UB", ["worker"], registry=r
        ).labels(w)
        self.hit_rate = Gauge(
            "supernode_prefill_cache_hit_rate", "Hit tokens / query tokens", ["worker"], registry=r
        ).labels(w)
        self._queries = 0
        self._hits = 0
        self._metrics = metrics  # muted with it

    def on_lookup(
        self, num_tokens: int, num_cached: int, hit_blocks: int, miss_blocks: int, loaded_bytes: int
    ) -> None:
        if self._metrics.is_muted:
            return
        self.query_tokens.inc(num_tokens)
        self.hit_tokens.inc(num_cached)
        self.hit_blocks.inc(hit_blocks)
        self.miss_blocks.inc(miss_blocks)
        self.loaded_bytes.inc(loaded_bytes)
        self._queries += num_tokens
        self._hits += num_cached
        self.hit_rate.set(self._hits / self._queries if self._queries else 0.0)


def configure_decode_metrics(
    metrics: WorkerMetrics, settings: Settings, kv_capacity_tokens_per_die: int
) -> None:
    """Tells a decode instance's metrics its model, KV capacity (all its ranks) and MTP depth."""
    metrics.on_config(
        model_name=settings.frontend.model_name,
        kv_capacity_tokens=kv_capacity_tokens_per_die * settings.decode.num_dies,
        block_tokens=settings.kvpool.block_tokens,
        mtp_depth=settings.decode.mtp_depth,
    )
