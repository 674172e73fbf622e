"""The real stack (every service a process) as vLLM tooling sees it: every metrics endpoint scraped with
Prometheus's Accept header keeps the `vllm:` names (issue items 1 and 5), DeepSeek token counts (item 2),
vLLM's defaults end a chat with "stop" (item 3), and `/tokenize` on the live frontend (item 4)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from supernode.launcher import LocalStack, StackConfig
from supernode.processes import free_port

pytestmark = pytest.mark.e2e
PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
ROUTER_NAMES = {
    "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_count",
    "vllm:request_queue_time_seconds_sum", "vllm:request_decode_time_seconds_count",
    "vllm:num_preemptions_total", "vllm:request_success_total",
}  # fmt: skip
DECODE_NAMES = {
    "vllm:kv_cache_usage_perc", "vllm:spec_decode_num_drafts_total",
    "vllm:spec_decode_num_accepted_tokens_total", "supernode_decode_kv_tokens_capacity",
}  # fmt: skip
SERVICES = ("ROUTER", "FABRIC", "KVPOOL", "PREFILL", "DECODE")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    ports = {name: free_port() for name in SERVICES}
    env = {f"SUPERNODE_{name}__METRICS_PORT": str(port) for name, port in ports.items()}
    stack = LocalStack(
        StackConfig(
            num_prefill=1, num_decode=1, with_frontend=True, ephemeral_ports=True,
            log_dir=tmp_path_factory.mktemp("vllm"), env=env,
        )
    )  # fmt: skip
    try:
        asyncio.run(stack.start())
    except BaseException:
        stack.stop()
        raise
    yield f"http://127.0.0.1:{stack.ports['frontend']}", ports
    stack.stop()


def test_chat_without_max_tokens_finishes_with_stop(live) -> None:
    url, _ = live
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    messages: list[Any] = [{"role": "user", "content": "Tell me about the CloudMatrix384 supernode."}]
    done = client.chat.completions.create(model="deepseek-r1", messages=messages, seed=4)
    again = client.chat.completions.create(model="deepseek-r1", messages=messages, seed=4)
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.content == again.choices[0].message.content  # deterministic per seed
    assert done.usage is not None
    assert 2 <= done.usage.completion_tokens < 163840 - done.usage.prompt_tokens
    streamed: Any = client.chat.completions.create(
        model="deepseek-r1", messages=messages, seed=4, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == done.choices[0].message.content
    )
    fixed = client.chat.completions.create(
        model="deepseek-r1", messages=messages, seed=4, max_tokens=400, extra_body={"ignore_eos": True}
    )
    assert fixed.usage is not None
    assert fixed.choices[0].finish_reason == "length" and fixed.usage.completion_tokens == 400


def test_prompt_tokens_are_deepseek_tokens(live) -> None:
    url, _ = live
    sentence = "The quick brown fox jumps over the lazy dog."
    count = httpx.post(f"{url}/tokenize", json={"prompt": sentence}).json()["count"]
    assert count == 10 and count < len(sentence.encode())
    done = httpx.post(
        f"{url}/v1/completions",
        json={"model": "deepseek-r1", "prompt": sentence, "max_tokens": 4},
        timeout=30,
    ).json()
    assert done["usage"]["prompt_tokens"] == count
    text = done["choices"][0]["text"]
    retokenized = httpx.post(f"{url}/tokenize", json={"prompt": text}).json()["count"]
    assert retokenized == done["usage"]["completion_tokens"] or done["choices"][0]["finish_reason"] == "stop"
    body = {"model": "deepseek-r1", "prompt": sentence, "max_tokens": 6, "logprobs": 2, "ignore_eos": True}
    choice = httpx.post(f"{url}/v1/completions", json=body, timeout=30).json()["choices"][0]
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]  # one entry per emitted token


def test_every_metrics_endpoint_keeps_vllm_names_for_prometheus(live) -> None:
    url, ports = live
    router_metrics = f"http://127.0.0.1:{ports['ROUTER']}/metrics"
    before = _counts(httpx.get(router_metrics, headers={"Accept": PROMETHEUS_ACCEPT}).text)
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    for seed in range(3):  # streamed, so inter-token latency is observed at the router and frontend
        list(client.completions.create(model="deepseek-r1", prompt="one two three", max_tokens=40,
                                       seed=seed, stream=True, extra_body={"ignore_eos": True}))  # fmt: skip
    endpoints = {name.lower(): f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    endpoints["frontend"] = f"{url}/metrics"
    names: dict[str, set[str]] = {}
    for service, endpoint in endpoints.items():
        resp = httpx.get(endpoint, headers={"Accept": PROMETHEUS_ACCEPT})
        assert resp.headers["content-type"].startswith("application/openmetrics-text"), service
        assert "escaping=underscores" not in resp.headers["content-type"]
        found: set[str] = set()
        for family in parse_openmetrics(resp.text):
            for sample in family.samples:
                assert sample.name.startswith(family.name), (service, sample.name, family.name)
                found.add(sample.name)
        classic = httpx.get(endpoint, headers={"Accept": "text/plain;version=0.0.4"})
        assert classic.headers["content-type"].startswith("text/plain")
        assert {s.name for f in parse_text(classic.text) for s in f.samples} >= {
            n for n in found if n.startswith("vllm:")
        }
        names[service] = found
    for service in ("router", "frontend"):
        assert ROUTER_NAMES <= names[service], service
        assert not any(n.startswith("vllm_") for n in names[service])
    assert DECODE_NAMES <= names["decode"]
    after = _counts(httpx.get(router_metrics, headers={"Accept": PROMETHEUS_ACCEPT}).text)
    itl = after["vllm:inter_token_latency_seconds"] - before["vllm:inter_token_latency_seconds"]
    gaps = after["supernode_chunk_gap_seconds"] - before["supernode_chunk_gap_seconds"]
    assert itl == 3 * 39  # one observation per token after the first, as vLLM counts
    assert 0 < gaps < itl  # MTP sends several tokens per chunk


def _counts(exposition: str) -> dict[str, float]:
    """Observation counts of the two inter-token histograms in an OpenMetrics exposition."""
    wanted = ("vllm:inter_token_latency_seconds", "supernode_chunk_gap_seconds")
    return {
        f.name: next(s.value for s in f.samples if s.name == f.name + "_count")
        for f in parse_openmetrics(exposition)
        if f.name in wanted
    }


def test_bench_input_len_means_server_tokens(live, tmp_path) -> None:
    from supernode.loadgen.http_target import HttpTarget
    from supernode.loadgen.scenarios import preset
    from supernode.loadgen.stats import Deployment
    from supernode.loadgen.suite import run_folder, run_suite

    url, _ = live
    deployment = Deployment(16, 1.0)
    cfg = preset("mixed", deployment).override(
        workload="synthetic",
        input_len="fixed:512",
        output_len="fixed:4",
        num_requests=4,
        request_rates=(20.0,),
    )

    async def bench():
        async with HttpTarget(url, "deepseek-r1") as target:
            return await run_suite(
                cfg, target, url, deployment, 1.0, run_folder(tmp_path, cfg.scenario), None, None, False
            )

    outcome = asyncio.run(bench())
    results = outcome.results
    assert results["completed"] == 4 and results["scenario"] == "custom"
    assert results["total_input_tokens"] == results["total_requested_input_tokens"] == 4 * 512
