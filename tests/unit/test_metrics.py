"""ServingMetrics / WorkerMetrics / FabricMetrics: names, types, buckets, gauges, and the HTTP server."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supernode.runtime import metrics as m

MODEL = "deepseek-r1"


def families(*registries: m.CollectorRegistry) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(m.render(*registries).decode())}


def sample(registry: m.CollectorRegistry, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(m.render(registry).decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def buckets(registry: m.CollectorRegistry, name: str) -> list[float]:
    family = families(registry)[name]
    return [float(s.labels["le"]) for s in family.samples if s.name == f"{name}_bucket"]  # type: ignore[attr-defined]


def finish(tracker: m.RequestTracker, **overrides: object) -> None:
    args: dict[str, object] = dict(
        num_prompt_tokens=1000, num_output_tokens=11, num_cached_tokens=256, tpot_s=0.05, e2e_s=1.0,
        finish_reason="length", ttft_s=0.5,
    )  # fmt: skip
    tracker.on_finish(**(args | overrides))  # type: ignore[arg-type]


def test_vllm_names_and_types() -> None:
    serving = m.ServingMetrics(MODEL)
    finish(serving.on_arrival())
    found = {name: family.type for name, family in families(serving.registry).items()}  # type: ignore[attr-defined]
    expected = {
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:time_per_output_token_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:request_prompt_tokens": "histogram",
        "vllm:request_generation_tokens": "histogram",
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:request_success": "counter",
        "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter",
        "supernode_request_errors": "counter",
        "supernode_request_phase_seconds": "histogram",
    }
    for name, kind in expected.items():
        assert found.get(name) == kind, name
    text = m.render(serving.registry).decode()
    for exposed in (
        "vllm:prompt_tokens_total{",
        "vllm:request_success_total{",
        "vllm:prefix_cache_hits_total{",
    ):
        assert exposed in text


def test_buckets_span_emulated_ranges() -> None:
    registry = m.ServingMetrics(MODEL).registry
    ttft = buckets(registry, "vllm:time_to_first_token_seconds")
    tpot = buckets(registry, "vllm:time_per_output_token_seconds")
    assert ttft[0] == 0.001 and ttft[-2] == 60.0 and ttft[-1] == float("inf")
    assert tpot[0] == 0.001 and tpot[-2] == 1.0
    assert 0.05 in tpot and ttft == sorted(ttft)


def test_finish_counts_tokens_cache_and_reason() -> None:
    serving = m.ServingMetrics(MODEL)
    tracker = serving.on_arrival()
    tracker.on_start()
    tracker.on_first_token(0.2)
    tracker.on_token(0.05)
    finish(tracker, finish_reason="stop", ttft_s=9.0)  # ttft already observed: not observed twice
    r = serving.registry
    assert sample(r, "vllm:prompt_tokens_total", model_name=MODEL) == 1000
    assert sample(r, "vllm:generation_tokens_total") == 11
    assert sample(r, "vllm:prefix_cache_queries_total") == 1000
    assert sample(r, "vllm:prefix_cache_hits_total") == 256
    assert sample(r, "vllm:request_success_total", finished_reason="stop") == 1
    assert sample(r, "vllm:request_success_total", finished_reason="length") == 0
    assert sample(r, "vllm:time_to_first_token_seconds_count") == 1
    assert sample(r, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.2)
    assert sample(r, "vllm:inter_token_latency_seconds_count") == 1
    assert sample(r, "vllm:time_per_output_token_seconds_sum") == pytest.approx(0.05)


def test_gauges_stay_balanced_through_every_path() -> None:
    serving = m.ServingMetrics(MODEL)
    r = serving.registry
    a, b, c = serving.on_arrival(), serving.on_arrival(), serving.on_arrival()
    assert sample(r, "vllm:num_requests_waiting") == 3
    a.on_start()
    b.on_start()
    assert (sample(r, "vllm:num_requests_waiting"), sample(r, "vllm:num_requests_running")) == (1, 2)
    finish(a)
    b.on_error("UNAVAILABLE")
    c.on_error("RESOURCE_EXHAUSTED")  # failed while waiting
    for tracker in (a, b, c):  # late calls are no-ops
        tracker.on_error("CANCELLED")
        finish(tracker)
    assert (sample(r, "vllm:num_requests_waiting"), sample(r, "vllm:num_requests_running")) == (0, 0)
    assert sample(r, "supernode_request_errors_total", code="UNAVAILABLE") == 1
    assert sample(r, "supernode_request_errors_total", code="RESOURCE_EXHAUSTED") == 1
    assert sample(r, "vllm:request_success_total", finished_reason="length") == 1


def test_instances_are_independent() -> None:
    one, two = m.ServingMetrics("a"), m.ServingMetrics("a")
    finish(one.on_arrival())
    assert sample(one.registry, "vllm:prompt_tokens_total") == 1000
    assert sample(two.registry, "vllm:prompt_tokens_total") == 0


def test_fabric_metrics() -> None:
    fabric = m.FabricMetrics()
    fabric.on_transfer("rdma", 70_272 * 1024, 0.004)
    fabric.set_utilization("rdma", 0.25)
    found = families(fabric.registry)
    assert {"supernode_fabric_bytes", "supernode_fabric_transfer_seconds"} <= set(found)
    assert sample(fabric.registry, "supernode_fabric_bytes_total", plane="rdma") == 70_272 * 1024
    assert sample(fabric.registry, "supernode_fabric_utilization_ratio", plane="rdma") == 0.25


def test_metrics_server_serves_registries_and_port_zero_disables() -> None:
    m.start_metrics_server(0, "127.0.0.1")  # disabled: nothing to check but that it returns
    serving = m.ServingMetrics(MODEL)
    finish(serving.on_arrival())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m.start_metrics_server(port, "127.0.0.1", serving.registry)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "vllm:prompt_tokens" in names and "python_gc_objects_collected" in names


def test_worker_metrics_record_steps_until_muted() -> None:
    from supernode.runtime.worker_metrics import WorkerMetrics

    metrics = WorkerMetrics("decode", "d0", 2)
    metrics.on_step(8, 4, 0.02, {"attention": 5000.0}, 16)
    metrics.on_queue(3, 1000, 128, 0.0)
    assert sample(metrics.registry, "supernode_decode_batch_size", worker="d0") == 8
    assert sample(metrics.registry, "supernode_decode_kv_blocks_used", worker="d0") == 8
    metrics.mute()  # a simulation's engines: nothing is served, so nothing is updated
    metrics.on_step(1, 1, 0.01, {"attention": 1000.0}, 2)
    metrics.on_queue(0, 0, 128, 0.0)
    metrics.on_idle()
    assert sample(metrics.registry, "supernode_decode_batch_size", worker="d0") == 8
    assert sample(metrics.registry, "supernode_decode_tokens_total", worker="d0") == 16
    assert sample(metrics.registry, "supernode_decode_queue_length", worker="d0") == 3
