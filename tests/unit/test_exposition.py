"""Metrics that survive any scraper (issue item 1) and the new metrics (item 5), without a network."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from supernode.runtime import exposition
from supernode.runtime import metrics as m
from supernode.runtime.config import Settings
from supernode.runtime.worker_metrics import WorkerMetrics, configure_decode_metrics

PROMETHEUS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (PROMETHEUS, exposition.OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0; escaping=underscores", exposition.OPENMETRICS),
        ("text/plain;version=0.0.4", exposition.TEXT),
        ("text/plain;q=0.9,application/openmetrics-text;q=0.5", exposition.TEXT),
        ("*/*", exposition.TEXT),
        (None, exposition.TEXT),
    ],
)
def test_negotiation(accept: str | None, kind: str) -> None:
    assert exposition.negotiate(accept) == kind


def stats(**kw: float) -> SimpleNamespace:
    base = dict(
        num_prompt_tokens=100, num_output_tokens=11, num_cached_tokens=0, ttft_s=0.5, tpot_s=0.05,
        e2e_s=1.0, prefill_queue_s=0.2, prefill_compute_s=0.25, cache_load_s=0.0, kv_pull_s=0.01,
    )  # fmt: skip
    return SimpleNamespace(**(base | kw))


def served(accept: str, *registries: m.CollectorRegistry) -> dict[str, dict[str, float]]:
    """{family: {sample name + labels: value}} as a scraper sending `accept` would parse it."""
    body, content_type = exposition.exposition(accept, *registries)
    parse = parse_openmetrics if content_type.startswith("application/openmetrics") else parse_text
    out: dict[str, dict[str, float]] = {}
    for family in parse(body.decode()):
        for s in family.samples:
            assert s.name.startswith(family.name), (s.name, family.name)  # metadata and samples agree
            out.setdefault(family.name, {})[s.name + repr(sorted(s.labels.items()))] = s.value
    return out


@pytest.mark.parametrize("accept", [PROMETHEUS, "text/plain;version=0.0.4"])
def test_vllm_names_survive_both_formats(accept: str) -> None:
    serving = m.ServingMetrics("deepseek-r1")
    tracker = serving.on_arrival()
    tracker.on_start()
    tracker.on_first_token(0.5)
    tracker.on_token(0.06, 3)  # an MTP chunk of three tokens
    tracker.on_finish_stats(stats(), "stop")
    families = served(accept, serving.registry)
    assert all(":" in name or name.startswith("supernode_") for name in families)
    itl = families["vllm:inter_token_latency_seconds"]
    count = next(v for k, v in itl.items() if k.startswith("vllm:inter_token_latency_seconds_count"))
    total = next(v for k, v in itl.items() if k.startswith("vllm:inter_token_latency_seconds_sum"))
    assert count == 3 and total == pytest.approx(0.06)  # per token, as vLLM counts
    gaps = families["supernode_chunk_gap_seconds"]
    assert next(v for k, v in gaps.items() if "_count" in k) == 1
    for name, value in (("queue", 0.2), ("prefill", 0.3), ("decode", 0.5), ("inference", 0.8)):
        family = families[f"vllm:request_{name}_time_seconds"]
        assert next(v for k, v in family.items() if "_sum" in k) == pytest.approx(value), name
    assert families["vllm:num_preemptions"]


def test_decode_worker_kv_usage_capacity_and_spec_decode() -> None:
    worker = WorkerMetrics("decode", "decode-0", 1.0)
    settings = Settings(decode={"num_dies": 2, "mtp_depth": 1})
    configure_decode_metrics(worker, settings, kv_capacity_tokens_per_die=5000)
    worker.on_queue(waiting=0, kv_tokens=2500, block_tokens=128, lag_s=0.0)
    worker.on_step(batch_size=4, batch_per_die=2, duration_s=0.02, parts_us={}, num_tokens=7)
    families = served(PROMETHEUS, worker.registry)

    def value(family: str) -> float:
        return next(iter(families[family].values()))

    assert value("vllm:kv_cache_usage_perc") == pytest.approx(0.25)
    assert value("supernode_decode_kv_tokens_capacity") == 10_000
    assert value("supernode_decode_kv_blocks_capacity") == 10_000 // 128
    assert value("vllm:spec_decode_num_drafts") == 4
    assert value("vllm:spec_decode_num_draft_tokens") == 4
    assert value("vllm:spec_decode_num_accepted_tokens") == 3


def test_metrics_server_answers_prometheus_with_openmetrics() -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serving = m.ServingMetrics("deepseek-r1")
    serving.on_arrival()
    m.start_metrics_server(port, "127.0.0.1", serving.registry)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": PROMETHEUS})
    with urllib.request.urlopen(request, timeout=5) as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"] == exposition.OPENMETRICS_CONTENT_TYPE
    assert body.endswith("# EOF\n") and "vllm:num_requests_waiting{" in body and "vllm_" not in body
