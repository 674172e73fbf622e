"""The official openai client against the frontend in front of the real stack (every service a process)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openai import OpenAI

from supernode.launcher import LocalStack, StackConfig

pytestmark = pytest.mark.e2e
SYSTEM = "You are a careful assistant. " * 200  # > 8 blocks of shared prefix (6 tokens a sentence)


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    stack = LocalStack(
        StackConfig(
            num_prefill=1,
            num_decode=1,
            with_frontend=True,
            ephemeral_ports=True,
            log_dir=tmp_path_factory.mktemp("openai"),
        )
    )
    try:
        asyncio.run(stack.start())
    except BaseException:
        stack.stop()
        raise
    yield f"http://127.0.0.1:{stack.ports['frontend']}"
    codes = stack.stop()
    assert codes["frontend"] == 0


def test_openai_client_only_base_url_changed(frontend):
    client = OpenAI(base_url=f"{frontend}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["deepseek-r1"]
    done = client.completions.create(
        model="deepseek-r1", prompt="one two three one two", max_tokens=6, seed=3
    )
    assert done.usage.completion_tokens == 6 and done.choices[0].finish_reason == "length"
    chunks = list(
        client.completions.create(
            model="deepseek-r1", prompt="one two three one two", max_tokens=6, seed=3, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
    first = client.chat.completions.create(model="deepseek-r1", messages=messages, max_tokens=8)
    again = client.chat.completions.create(
        model="deepseek-r1", messages=[*messages[:1], {"role": "user", "content": "other"}], max_tokens=8
    )
    assert first.usage.completion_tokens == 8
    assert again.usage.prompt_tokens_details.cached_tokens >= 128 * 8, "the shared system prompt was cached"
    stream = client.chat.completions.create(
        model="deepseek-r1",
        messages=messages,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = list(stream)
    assert parts[-1].usage.completion_tokens == 8
    assert (
        "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
        == first.choices[0].message.content
    )


def test_router_limits_come_back_as_openai_errors(frontend):
    with httpx.Client(base_url=frontend) as http:
        too_many = http.post(
            "/v1/completions", json={"model": "deepseek-r1", "prompt": "x", "max_tokens": 10**6}
        )
        assert too_many.status_code == 400
        assert too_many.json()["error"]["param"] == "max_tokens"
        bad_json = http.post(
            "/v1/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400 and "error" in bad_json.json()
        ok = http.post(
            "/v1/completions", json={"model": "deepseek-r1", "prompt": "still here", "max_tokens": 2}
        )
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
        metrics = http.get("/metrics").text
        assert "vllm:time_to_first_token_seconds_bucket" in metrics
