"""vLLM's surface on the frontend (issue items 3 and 4), over real uvicorn and real gRPC to a fake router:
tokenize/detokenize, version, ping, OpenAPI, HEAD /health and 503 without a router, max_model_len,
max_tokens defaulting to the rest of the context, n choices, stop strings, min_tokens, continuous usage,
accepted-and-ignored vs rejected parameters."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import httpx
import pytest

from supernode.core.tokenizer import deepseek
from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.schemas import IGNORED, REJECTED
from supernode.frontend.server import serve_in_background
from supernode.runtime.config import Settings

MODEL = "deepseek-r1"
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it naps in the warm afternoon sun."


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, FakeRouter]]:
    async with serve_fake_router(FakeRouter()) as (address, router):
        settings = Settings(router={"address": address, "max_context_tokens": 4096})
        async with serve_in_background(create_app(settings), settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                yield client, router


async def test_tokenize_counts_as_deepseek_and_detokenize_round_trips(http) -> None:
    client, _ = http
    body = (await client.post("/tokenize", json={"model": MODEL, "prompt": SENTENCE})).json()
    assert body["count"] == len(body["tokens"]) == 20  # DeepSeek's BPE, not the 88 UTF-8 bytes
    assert body["max_model_len"] == 4096 and body["tokens"] == deepseek().encode(SENTENCE)
    text = (await client.post("/detokenize", json={"tokens": body["tokens"]})).json()["prompt"]
    assert text == SENTENCE
    chat = await client.post(
        "/tokenize", json={"messages": [{"role": "user", "content": "Hi"}], "return_token_strs": True}
    )
    assert chat.json()["token_strs"][:2] == ["<｜begin▁of▁sentence｜>", "<｜User｜>"]
    bad = await client.post("/detokenize", json={"tokens": [1 << 20]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    both = await client.post("/tokenize", json={"prompt": "a", "messages": []})
    assert both.status_code == 400 and both.json()["error"]["param"] == "prompt"


async def test_version_ping_openapi_docs_and_models(http) -> None:
    client, _ = http
    assert (await client.get("/version")).json()["version"]
    assert (await client.get("/ping")).status_code == 200 and (await client.post("/ping")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v1/completions", "/v1/chat/completions", "/tokenize", "/health"} <= set(paths)
    assert "swagger" in (await client.get("/docs")).text.lower()
    card = (await client.get("/v1/models")).json()["data"][0]
    assert card["id"] == MODEL and card["max_model_len"] == 4096


async def test_health_head_and_503_when_router_is_down() -> None:
    async with serve_fake_router(FakeRouter()) as (address, _):
        settings = Settings(router={"address": address})
        app = create_app(settings)
        async with serve_in_background(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
            head = await client.head("/health")
            assert head.status_code == 200 and head.content == b""
            assert (await client.get("/health")).json() == {"status": "ok"}
    # The router is gone now.
    dead = Settings(router={"address": address})
    async with serve_in_background(create_app(dead), dead) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health")).status_code == 503
        assert (await client.head("/health")).status_code == 503


async def test_max_tokens_defaults_to_the_rest_of_the_context(http) -> None:
    client, router = http
    resp = await client.post("/v1/completions", json={"model": MODEL, "prompt": SENTENCE})
    assert resp.status_code == 200
    assert router.requests[-1].max_tokens == 4096 - 20 and router.requests[-1].sampling.ignore_eos is False
    too_long = await client.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 5000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "prompt"


async def test_n_choices_use_successive_seeds(http) -> None:
    client, router = http
    resp = (await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "abc", "max_tokens": 3, "n": 3, "seed": 5}
    )).json()  # fmt: skip
    assert [c["index"] for c in resp["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in resp["choices"]}) == 3
    assert sorted(r.sampling.seed for r in router.requests[-3:]) == [5, 6, 7]
    assert resp["usage"]["completion_tokens"] == 9 and resp["usage"]["prompt_tokens"] == 3


async def test_stop_strings_cut_the_output_streamed_or_not(http) -> None:
    client, router = http
    # The fake router writes successive letters: prompt "abc" with seed 0 gives "defghijk...".
    base = {"model": MODEL, "prompt": "abc", "max_tokens": 10}
    whole = (await client.post("/v1/completions", json=base | {"stop": ["gh", "zz"]})).json()
    assert whole["choices"][0]["text"] == "def" and whole["choices"][0]["finish_reason"] == "stop"
    kept = await client.post(
        "/v1/completions", json=base | {"stop": "gh", "include_stop_str_in_output": True}
    )
    assert kept.json()["choices"][0]["text"] == "defgh"
    late = (await client.post("/v1/completions", json=base | {"stop": ["e"], "min_tokens": 3})).json()
    assert late["choices"][0]["text"] == "defghijklm" and late["choices"][0]["finish_reason"] == "length"
    assert router.requests[-1].sampling.min_tokens == 3
    async with client.stream("POST", "/v1/completions", json=base | {"stop": ["gh"], "stream": True}) as s:
        events = [json.loads(line[6:]) for line in [x async for x in s.aiter_lines()] if line[6:7] == "{"]
    assert "".join(e["choices"][0]["text"] for e in events) == "def"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_continuous_usage_stats(http) -> None:
    client, _ = http
    body = {
        "model": MODEL, "prompt": "abc", "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }  # fmt: skip
    async with client.stream("POST", "/v1/completions", json=body) as s:
        events = [json.loads(line[6:]) for line in [x async for x in s.aiter_lines()] if line[6:7] == "{"]
    counts = [e["usage"]["completion_tokens"] for e in events if e["choices"]]
    assert counts == [1, 2, 3, 4] and events[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("name", ["top_k", "min_p", "repetition_penalty", "logit_bias", "user"])
async def test_ignored_parameters_are_accepted(http, name: str) -> None:
    client, _ = http
    value = {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "logit_bias": {"1": 2.0}, "user": "u"}[name]
    assert name in IGNORED
    resp = await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 2, name: value}
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    "name", ["prompt_logprobs", "echo", "suffix", "best_of", "tools", "guided_json", "response_format"]
)
async def test_rejected_parameters_name_themselves(http, name: str) -> None:
    client, _ = http
    value = {"prompt_logprobs": 1, "echo": True, "suffix": "x", "best_of": 2, "tools": [{"type": "function"}],
             "guided_json": {"type": "object"}, "response_format": {"type": "json_object"}}[name]  # fmt: skip
    assert name in REJECTED
    body = {"model": MODEL, "messages": [{"role": "user", "content": "a"}], "max_tokens": 2, name: value}
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == name


async def test_completion_logprobs_follow_the_token_model(http) -> None:
    client, _ = http
    body = {"model": MODEL, "prompt": "abc", "max_tokens": 4, "logprobs": 3, "seed": 2}
    choice = (await client.post("/v1/completions", json=body)).json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == 4  # (the fake router's ids are bytes)
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(4)]
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        # the 3 most likely, and the emitted token as well when it is not among them (as vLLM)
        assert len(top) in (3, 4) and top[token] == logprob < 0
        assert sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-9
    again = (await client.post("/v1/completions", json=body)).json()["choices"][0]["logprobs"]
    assert again == lp  # deterministic per request and seed
    stream = body | {"stream": True}
    async with client.stream("POST", "/v1/completions", json=stream) as s:
        events = [json.loads(line[6:]) for line in [x async for x in s.aiter_lines()] if line[6:7] == "{"]
    streamed = [t for e in events for t in e["choices"][0]["logprobs"]["token_logprobs"]]
    assert streamed == lp["token_logprobs"]


async def test_chat_logprobs_and_top_logprobs(http) -> None:
    client, _ = http
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    plain = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
    assert plain["logprobs"] is None
    asked = body | {"logprobs": True, "top_logprobs": 2}
    content = (await client.post("/v1/chat/completions", json=asked)).json()["choices"][0]["logprobs"][
        "content"
    ]
    assert len(content) == 3
    for entry in content:
        assert entry["bytes"] == list(entry["token"].encode()) and len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]
    bad = await client.post("/v1/chat/completions", json=body | {"top_logprobs": 2})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"
