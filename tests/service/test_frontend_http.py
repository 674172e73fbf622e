"""The frontend over plain HTTP (httpx): error bodies, limits, auth, SSE framing, metrics, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.server import serve_in_background
from supernode.runtime.config import Settings

MODEL = "deepseek-r1"
USER_X = [{"role": "user", "content": "x"}]
MAX_BODY = 4096
OK_BODY = {"model": MODEL, "prompt": "hello", "max_tokens": 3}


@dataclass
class Stack:
    http: httpx.AsyncClient
    router: FakeRouter

    async def post(self, path: str, body: object, **kwargs: object) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.http.post(path, content=content, **kwargs)  # type: ignore[arg-type]

    async def assert_serving(self) -> None:
        resp = await self.post("/v1/completions", OK_BODY)
        assert resp.status_code == 200, resp.text


async def start(router: FakeRouter, **frontend: object) -> AsyncGenerator[Stack, None]:
    async with serve_fake_router(router) as (address, router):
        settings = Settings(
            router={"address": address, "max_tokens_limit": 1000},
            frontend={"max_body_bytes": MAX_BODY, **frontend},
        )
        async with serve_in_background(create_app(settings), settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                yield Stack(http, router)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async for s in start(FakeRouter(max_tokens_limit=100)):
        yield s


def error_of(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        ({"prompt": "x"}, "model"),
        ({"model": MODEL}, "prompt"),
        ({"model": MODEL, "prompt": 5}, "prompt"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL, "prompt": ["a", "b"]}, "prompt"),
        ({"model": MODEL, "prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 1001}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "temperature": 3}, "temperature"),
        ({"model": MODEL, "prompt": "x", "stream": "yes"}, "stream"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 5, "n": 9}, "n"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 5, "stop": [""]}, "stop"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 5, "min_tokens": 6}, "min_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 5, "logprobs": 21}, "logprobs"),
        (
            {"model": MODEL, "prompt": "x", "max_tokens": 5, "response_format": {"type": "json_object"}},
            "response_format",
        ),
        (
            {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
    ],
)
async def test_completion_rejects_bad_bodies(stack: Stack, body: object, param: str | None) -> None:
    error = error_of(await stack.post("/v1/completions", body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    await stack.assert_serving()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": "hi"}, "messages"),
        ({"model": MODEL, "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({"model": MODEL, "messages": USER_X, "max_completion_tokens": 5000}, "max_completion_tokens"),
        ({"model": MODEL, "messages": USER_X, "tools": [{"type": "function"}]}, "tools"),
    ],
)  # fmt: skip
async def test_chat_rejects_bad_bodies(stack: Stack, body: object, param: str) -> None:
    error = error_of(await stack.post("/v1/chat/completions", body), 400)
    assert error["param"] == param
    await stack.assert_serving()


async def test_unknown_model_is_404(stack: Stack) -> None:
    error = error_of(await stack.post("/v1/completions", OK_BODY | {"model": "gpt-4"}), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    error_of(await stack.http.get("/v1/models/gpt-4"), 404)
    error_of(await stack.http.get("/v2/nothing"), 404)
    error_of(await stack.http.get("/v1/completions"), 405)
    await stack.assert_serving()


async def test_oversized_body_is_413(stack: Stack) -> None:
    big = OK_BODY | {"prompt": "x" * MAX_BODY}
    error = error_of(await stack.post("/v1/completions", big), 413)
    assert error["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(8):
            yield b" " * 1024

    error_of(await stack.http.post("/v1/completions", content=chunked()), 413)
    await stack.assert_serving()


async def test_router_errors_map_to_http(stack: Stack) -> None:
    # the frontend allows 1000 tokens, the fake router only 100: the router's INVALID_ARGUMENT names the field
    error = error_of(await stack.post("/v1/completions", OK_BODY | {"max_tokens": 500}), 400)
    assert error["param"] == "max_tokens" and "100" in str(error["message"])
    resp = await stack.post("/v1/completions", OK_BODY | {"prompt": "!error:RESOURCE_EXHAUSTED"})
    assert error_of(resp, 429)["type"] == "rate_limit_error" and resp.headers["retry-after"] == "3"
    error_of(await stack.post("/v1/completions", OK_BODY | {"prompt": "!error:UNAVAILABLE"}), 503)
    error_of(await stack.post("/v1/completions", OK_BODY | {"prompt": "!error:DEADLINE_EXCEEDED"}), 504)
    await stack.assert_serving()


async def test_stream_framing_and_request_id(stack: Stack) -> None:
    body = OK_BODY | {"stream": True, "stream_options": {"include_usage": True}}
    resp = await stack.post("/v1/completions", body, headers={"X-Request-Id": "req-42"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-request-id"] == "req-42"
    events = [e for e in resp.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {p["id"] for p in payloads} == {"cmpl-req-42"}
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 3


async def test_migrations_are_in_the_usage_streamed_or_not(stack: Stack) -> None:
    body = OK_BODY | {"prompt": "moved !migrated:2", "n": 2}
    whole = (await stack.post("/v1/completions", body)).json()
    assert whole["usage"]["num_migrations"] == 4  # both choices moved twice
    streamed = await stack.post(
        "/v1/completions", body | {"n": 1, "stream": True, "stream_options": {"include_usage": True}}
    )
    last = json.loads([e for e in streamed.text.split("\n\n") if e][-2].removeprefix("data: "))
    assert last["choices"] == [] and last["usage"]["num_migrations"] == 2
    plain = (await stack.post("/v1/completions", OK_BODY)).json()
    assert plain["usage"]["num_migrations"] == 0


async def test_the_time_a_request_waited_in_the_frontend_goes_with_its_router_call(stack: Stack) -> None:
    await stack.assert_serving()
    assert len(stack.router.queued_s) == 1 and 0.0 < stack.router.queued_s[0] < 1.0


async def test_error_mid_stream_is_an_event(stack: Stack) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "!fail-after:2"}],
        "max_tokens": 8,
        "stream": True,
    }
    resp = await stack.post("/v1/chat/completions", body)
    assert resp.status_code == 200
    events = [e.removeprefix("data: ") for e in resp.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "unavailable" and "decode worker lost" in error["message"]
    contents = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-2]]
    assert len("".join(contents)) == 2
    await stack.assert_serving()


async def test_client_disconnect_cancels_router_call() -> None:
    async for stack in start(FakeRouter(chunk_delay_s=0.05)):
        body = OK_BODY | {"max_tokens": 100, "stream": True}
        async with stack.http.stream("POST", "/v1/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    break
        for _ in range(100):
            if stack.router.num_cancelled:
                break
            await asyncio.sleep(0.02)
        assert stack.router.num_cancelled == 1
        await stack.assert_serving()
        await asyncio.sleep(0.1)
        metrics = await stack.http.get("/metrics")
        assert 'supernode_request_errors_total{code="CANCELLED",model_name="deepseek-r1"} 1.0' in metrics.text
        assert 'vllm:num_requests_running{model_name="deepseek-r1"} 0.0' in metrics.text


async def test_api_keys() -> None:
    async for stack in start(FakeRouter(), api_keys=["k1", "k2"]):
        error = error_of(await stack.post("/v1/completions", OK_BODY), 401)
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        error_of(await stack.post("/v1/completions", OK_BODY, headers={"Authorization": "Bearer nope"}), 401)
        error_of(await stack.http.get("/v1/models"), 401)
        ok = await stack.post("/v1/completions", OK_BODY, headers={"Authorization": "Bearer k2"})
        assert ok.status_code == 200
        assert (await stack.http.get("/health")).status_code == 200  # probes need no key
        assert (await stack.http.get("/metrics")).status_code == 200


async def test_health_models_and_metrics(stack: Stack) -> None:
    assert (await stack.http.get("/health")).json() == {"status": "ok"}
    models = (await stack.http.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL
    await stack.assert_serving()
    await stack.post("/v1/completions", OK_BODY | {"prompt": "!error:RESOURCE_EXHAUSTED"})
    resp = await stack.http.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(resp.text)
        for s in f.samples
    }
    model = (("model_name", MODEL),)
    assert samples[("vllm:request_success_total", (("finished_reason", "length"),) + model)] == 1
    assert samples[("vllm:generation_tokens_total", model)] == 3
    assert samples[("supernode_request_errors_total", (("code", "RESOURCE_EXHAUSTED"),) + model)] == 1
    assert samples[("supernode_http_requests_total", (("path", "/v1/completions"), ("status", "429")))] == 1
