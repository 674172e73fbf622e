"""Prometheus metrics shared by the services: serving metrics under vLLM's names, plus `supernode_*` extras.

Every duration is in EMULATED seconds (what the cost model charged), never wall time, so dashboards read
the same at any `time_scale`. Each metrics object owns a private `CollectorRegistry` unless one is passed
in (tests build several side by side); `start_metrics_server` serves one or more registries over HTTP and
`exposition` answers a scrape for an existing HTTP app (the frontend's `/metrics`) in the format its
Accept header asks for; `render` is the classic text format.
Prefill/decode worker metrics live in `runtime.worker_metrics`.

Request lifecycle as the router reports it (`ServingMetrics`):

    tracker = metrics.on_arrival()        # waiting += 1
    tracker.on_start()                    # waiting -= 1, running += 1 (prefill dispatched)
    tracker.on_first_token(ttft_s)        # TTFT histogram
    tracker.on_token(gap_s, num_tokens)   # each later chunk: per-token ITL, and the chunk gap
    tracker.on_finish(...)                # running -= 1, token counters, TPOT / e2e, success{finished_reason}
    tracker.on_error(code)                # leaves the gauges right in any state; errors{code}

A tracker ignores calls that do not fit its state (a second finish, a finish after an error), so a
`finally:` that always calls `on_error` is safe.
"""

from __future__ import annotations

import logging
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from supernode.runtime.exposition import TEXT_CONTENT_TYPE, Union, exposition, serve
from supernode.runtime.fabric_metrics import FabricMetrics

CONTENT_TYPE_LATEST = TEXT_CONTENT_TYPE

__all__ = [
    "CONTENT_TYPE_LATEST",
    "E2E_BUCKETS_S",
    "TPOT_BUCKETS_S",
    "TTFT_BUCKETS_S",
    "CollectorRegistry",
    "FabricMetrics",
    "RequestTracker",
    "ServingMetrics",
    "exposition",
    "generate_latest",
    "render",
    "start_metrics_server",
]

logger = logging.getLogger(__name__)

# Emulated-time buckets. TTFT: 1 ms .. 60 s (a cached short prompt .. a long prompt behind a full queue).
TTFT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                  1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)  # fmt: skip
# TPOT and ITL: 1 ms .. 1 s, dense around the paper's 50 ms SLO.
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045,
                  0.05, 0.06, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)  # fmt: skip
# End-to-end and per-phase latencies: 10 ms .. 32 min.
E2E_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
                 90.0, 120.0, 240.0, 480.0, 960.0, 1920.0)  # fmt: skip
TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


def render(*registries: CollectorRegistry) -> bytes:
    """The Prometheus text format of `registries` concatenated (serve with `CONTENT_TYPE_LATEST`)."""
    return b"".join(generate_latest(registry) for registry in registries)


def start_metrics_server(port: int, host: str, *registries: CollectorRegistry) -> None:
    """Serve `registries` (plus the process/GC collectors) at http://host:port/metrics; port 0 = disabled.

    Runs in a daemon thread and answers OpenMetrics or the classic text format as the scraper asks,
    with the declared names either way (`runtime.exposition`). A port already taken (several
    instances on one host with the same setting) costs the metrics, not the service: it is logged
    and serving goes on.
    """
    if port == 0:
        logger.info("metrics server disabled (port 0)")
        return
    served = CollectorRegistry(auto_describe=False)
    served.register(Union((REGISTRY, *registries)))
    try:
        serve(port, host, served)
    except OSError as err:
        logger.warning("metrics port %s:%d unavailable (%s); metrics off for this process", host, port, err)
        return
    logger.info("metrics server on http://%s:%d/metrics", host, port)


class RequestStatsLike(Protocol):
    """What `ServingMetrics.observe_stats` reads (the SDK's `RequestStats` fits)."""

    @property
    def num_prompt_tokens(self) -> int: ...
    @property
    def num_output_tokens(self) -> int: ...
    @property
    def num_cached_tokens(self) -> int: ...
    @property
    def ttft_s(self) -> float: ...
    @property
    def tpot_s(self) -> float: ...
    @property
    def e2e_s(self) -> float: ...
    @property
    def prefill_queue_s(self) -> float: ...
    @property
    def prefill_compute_s(self) -> float: ...
    @property
    def cache_load_s(self) -> float: ...
    @property
    def kv_pull_s(self) -> float: ...


class ServingMetrics:
    """Request-level serving metrics of one model (label `model_name`), under vLLM's names.

    vLLM names (same meaning): vllm:time_to_first_token_seconds, vllm:time_per_output_token_seconds
    (per-request mean after the first token), vllm:inter_token_latency_seconds (per token),
    vllm:e2e_request_latency_seconds, vllm:request_prompt_tokens, vllm:request_generation_tokens,
    vllm:num_requests_running, vllm:num_requests_waiting, vllm:prompt_tokens_total,
    vllm:generation_tokens_total, vllm:request_success_total{finished_reason},
    vllm:prefix_cache_queries_total and vllm:prefix_cache_hits_total (prompt tokens),
    vllm:request_queue_time_seconds, vllm:request_prefill_time_seconds,
    vllm:request_decode_time_seconds, vllm:request_inference_time_seconds, vllm:num_preemptions_total.
    Supernode extras: supernode_request_errors_total{code}, supernode_request_phase_seconds{phase}
    (phase = prefill_queue | prefill_compute | cache_load | kv_pull), supernode_chunk_gap_seconds.
    """

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.model_name = model_name
        self.registry = registry if registry is not None else CollectorRegistry()
        r, m = self.registry, model_name
        self._ttft = _hist("vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS_S, r, m)
        self._tpot = _hist(
            "vllm:time_per_output_token_seconds", "Mean time per output token after the first.",
            TPOT_BUCKETS_S, r, m,
        )  # fmt: skip
        self._itl = _hist(
            "vllm:inter_token_latency_seconds", "Time between output tokens.", TPOT_BUCKETS_S, r, m
        )
        self._chunk_gap = _hist(
            "supernode_chunk_gap_seconds", "Time between streamed chunks (MTP sends several tokens).",
            TPOT_BUCKETS_S, r, m,
        )  # fmt: skip
        self._queue_time = _hist(
            "vllm:request_queue_time_seconds", "Time waiting for a prefill batch.", E2E_BUCKETS_S, r, m
        )
        self._prefill_time = _hist(
            "vllm:request_prefill_time_seconds", "Time from leaving the queue to the first token.",
            E2E_BUCKETS_S, r, m,
        )  # fmt: skip
        self._decode_time = _hist(
            "vllm:request_decode_time_seconds", "Time from the first token to the last.", E2E_BUCKETS_S, r, m
        )
        self._inference_time = _hist(
            "vllm:request_inference_time_seconds", "Time from leaving the queue to the last token.",
            E2E_BUCKETS_S, r, m,
        )  # fmt: skip
        self._preemptions = _count("vllm:num_preemptions", "Requests whose KV was lost and recomputed.", r, m)
        self._e2e = _hist("vllm:e2e_request_latency_seconds", "End-to-end latency.", E2E_BUCKETS_S, r, m)
        self._prompt_len = _hist(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS, r, m
        )
        self._output_len = _hist(
            "vllm:request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS, r, m
        )
        self.running = Gauge(
            "vllm:num_requests_running", "Requests running.", ("model_name",), registry=r
        ).labels(m)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting.", ("model_name",), registry=r
        ).labels(m)
        self._prompt_tokens = _count("vllm:prompt_tokens", "Prompt tokens of finished requests.", r, m)
        self._generation_tokens = _count("vllm:generation_tokens", "Generated tokens.", r, m)
        self._cache_queries = _count(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the cache.", r, m
        )
        self._cache_hits = _count("vllm:prefix_cache_hits", "Prompt tokens served from the cache.", r, m)
        self._success = Counter(
            "vllm:request_success", "Finished requests.", ("model_name", "finished_reason"), registry=r
        )
        for reason in ("length", "stop"):
            self._success.labels(model_name, reason)
        self._errors = Counter(
            "supernode_request_errors",
            "Failed requests by gRPC status name.",
            ("model_name", "code"),
            registry=r,
        )
        self._phase = Histogram(
            "supernode_request_phase_seconds", "Time spent in each phase of a request.",
            ("model_name", "phase"), registry=r, buckets=E2E_BUCKETS_S,
        )  # fmt: skip

    def on_arrival(self) -> RequestTracker:
        """A request was admitted and waits; the tracker carries it through the rest of its life."""
        self.waiting.inc()
        return RequestTracker(self)

    def on_phases(
        self, *, prefill_queue_s: float, prefill_compute_s: float, cache_load_s: float, kv_pull_s: float
    ) -> None:
        """Where one request's time went (emulated seconds)."""
        for phase, seconds in (
            ("prefill_queue", prefill_queue_s),
            ("prefill_compute", prefill_compute_s),
            ("cache_load", cache_load_s),
            ("kv_pull", kv_pull_s),
        ):
            self._phase.labels(self.model_name, phase).observe(seconds)

    def observe_stats(self, stats: RequestStatsLike, finish_reason: str) -> None:
        """Everything about one finished request from its final stats (gauges untouched)."""
        self._ttft.observe(stats.ttft_s)
        self._observe_finish(
            stats.num_prompt_tokens, stats.num_output_tokens, stats.num_cached_tokens,
            stats.tpot_s, stats.e2e_s, finish_reason,
        )  # fmt: skip
        self.on_phases(
            prefill_queue_s=stats.prefill_queue_s, prefill_compute_s=stats.prefill_compute_s,
            cache_load_s=stats.cache_load_s, kv_pull_s=stats.kv_pull_s,
        )  # fmt: skip
        self.on_request_times(stats)

    def on_request_times(self, stats: RequestStatsLike) -> None:
        """vLLM's per-request intervals: queue, prefill (queue left -> first token), decode, inference."""
        queue_s = max(0.0, stats.prefill_queue_s)
        self._queue_time.observe(queue_s)
        self._prefill_time.observe(max(0.0, stats.ttft_s - queue_s))
        self._decode_time.observe(max(0.0, stats.e2e_s - stats.ttft_s))
        self._inference_time.observe(max(0.0, stats.e2e_s - queue_s))

    def on_preemption(self) -> None:
        """A running request lost its KV and is computed again (vLLM counts this as a preemption)."""
        self._preemptions.inc()

    def on_error(self, code: str) -> None:
        """A request failed with gRPC status `code` (e.g. "RESOURCE_EXHAUSTED"); gauges untouched."""
        self._errors.labels(self.model_name, code).inc()

    def _observe_finish(
        self, num_prompt: int, num_output: int, num_cached: int, tpot_s: float, e2e_s: float, reason: str
    ) -> None:
        self._prompt_tokens.inc(num_prompt)
        self._generation_tokens.inc(num_output)
        self._cache_queries.inc(num_prompt)
        self._cache_hits.inc(num_cached)
        self._prompt_len.observe(num_prompt)
        self._output_len.observe(num_output)
        if num_output > 1:
            self._tpot.observe(tpot_s)
        self._e2e.observe(e2e_s)
        self._success.labels(self.model_name, reason).inc()


class RequestTracker:
    """One request's path through `ServingMetrics`; keeps the running/waiting gauges balanced."""

    __slots__ = ("_metrics", "_state", "_has_ttft")

    _WAITING, _RUNNING, _DONE = 0, 1, 2

    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics
        self._state = self._WAITING
        self._has_ttft = False

    def on_start(self) -> None:
        """The request left the wait queue (prefill dispatched)."""
        if self._state == self._WAITING:
            self._metrics.waiting.dec()
            self._metrics.running.inc()
            self._state = self._RUNNING

    def on_first_token(self, ttft_s: float) -> None:
        """The first token reached the router, `ttft_s` emulated seconds after arrival."""
        if self._state != self._DONE and not self._has_ttft:
            self._metrics._ttft.observe(ttft_s)
            self._has_ttft = True

    def on_token(self, gap_s: float, num_tokens: int = 1) -> None:
        """A later chunk of `num_tokens` tokens arrived `gap_s` emulated seconds after the previous one.

        The chunk gap is `supernode_chunk_gap_seconds`; inter-token latency is per token, as vLLM
        counts it: the gap shared by the chunk's tokens (an MTP step emits several at once)."""
        if self._state == self._DONE or num_tokens <= 0:
            return
        self._metrics._chunk_gap.observe(gap_s)
        for _ in range(num_tokens):
            self._metrics._itl.observe(gap_s / num_tokens)

    def on_finish(
        self,
        *,
        num_prompt_tokens: int,
        num_output_tokens: int,
        num_cached_tokens: int,
        tpot_s: float,
        e2e_s: float,
        finish_reason: str,
        ttft_s: float | None = None,
    ) -> None:
        """The request completed. `ttft_s` is observed only if `on_first_token` was not called."""
        if self._state == self._DONE:
            return
        if ttft_s is not None:
            self.on_first_token(ttft_s)
        self._leave()
        self._metrics._observe_finish(
            num_prompt_tokens, num_output_tokens, num_cached_tokens, tpot_s, e2e_s, finish_reason
        )

    def on_finish_stats(
        self, stats: RequestStatsLike, finish_reason: str, *, with_ttft: bool = False
    ) -> None:
        """The request completed with these final stats: counters, latencies and phases at once.
        `with_ttft` also observes the stats' TTFT (for callers that did not see the first token)."""
        if self._state == self._DONE:
            return
        self.on_finish(
            num_prompt_tokens=stats.num_prompt_tokens,
            num_output_tokens=stats.num_output_tokens,
            num_cached_tokens=stats.num_cached_tokens,
            tpot_s=stats.tpot_s,
            e2e_s=stats.e2e_s,
            finish_reason=finish_reason,
            ttft_s=stats.ttft_s if with_ttft else None,
        )
        self._metrics.on_phases(
            prefill_queue_s=stats.prefill_queue_s,
            prefill_compute_s=stats.prefill_compute_s,
            cache_load_s=stats.cache_load_s,
            kv_pull_s=stats.kv_pull_s,
        )
        self._metrics.on_request_times(stats)

    def on_error(self, code: str) -> None:
        """The request failed with gRPC status `code`; a no-op once finished."""
        if self._state == self._DONE:
            return
        self._leave()
        self._metrics.on_error(code)

    def _leave(self) -> None:
        gauge = self._metrics.waiting if self._state == self._WAITING else self._metrics.running
        gauge.dec()
        self._state = self._DONE


def _hist(
    name: str, doc: str, buckets: tuple[float, ...], registry: CollectorRegistry, model: str
) -> Histogram:
    """A histogram labelled `model_name`, bound to `model`."""
    return Histogram(name, doc, ("model_name",), registry=registry, buckets=buckets).labels(model)


def _count(name: str, doc: str, registry: CollectorRegistry, model: str) -> Counter:
    """A counter labelled `model_name`, bound to `model`."""
    return Counter(name, doc, ("model_name",), registry=registry).labels(model)
