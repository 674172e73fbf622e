"""Any OpenAI-compatible server, through `POST /v1/completions` with SSE streaming.

Everything is measured in wall time from the stream and multiplied by `time_scale`. Prompts are sent as
text in DeepSeek's vocabulary (it tokenizes back to the workload's token ids); token counts come from
the final `usage` chunk when the server sends one (`stream_options.include_usage`), cached tokens from
`usage.prompt_tokens_details.cached_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import TracebackType
from typing import Any

import httpx

from supernode.core.tokenizer import deepseek
from supernode.loadgen.http_clients import HttpClients
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.targets import error_kind
from supernode.loadgen.tokens import detokenize

# HTTP statuses back to the gRPC names the SDK target reports, so both targets count errors alike.
_HTTP_KINDS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def http_error_kind(status: int) -> str:
    return _HTTP_KINDS.get(status, f"HTTP_{status}")


def completions_url(endpoint: str) -> str:
    """`http://host:8000`, `.../v1` or the full `.../v1/completions` all name the same URL."""
    base = endpoint.rstrip("/")
    if base.endswith("/completions"):
        return base
    return base + ("/completions" if base.endswith("/v1") else "/v1/completions")


class HttpTarget:
    name = "http"

    def __init__(
        self, endpoint: str, model: str, time_scale: float = 1.0, timeout_s: float = 600.0, api_key: str = ""
    ) -> None:
        self._url, self._model, self._time_scale = completions_url(endpoint), model, time_scale
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._client = HttpClients()  # replaced in __aenter__, inside the running loop

    async def __aenter__(self) -> HttpTarget:
        await asyncio.to_thread(deepseek)  # load the vocabulary now, not inside the first timed send
        await self._client.aclose()
        # Shards of a few dozen streams each: one httpx pool carrying hundreds would spend the load
        # generator's CPU walking its connections (loadgen/http_clients.py) and skew what it measures.
        self._client = HttpClients(
            headers=self._headers,
            timeout=httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    def _body(self, spec: RequestSpec) -> dict[str, Any]:
        return {
            "model": self._model,
            "prompt": detokenize(spec.token_ids),
            "max_tokens": spec.max_tokens,
            "seed": spec.seed,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def send(self, spec: RequestSpec, result: RequestResult) -> None:
        usage: dict[str, Any] | None = None
        chunks = 0
        try:
            async with self._client.stream("POST", self._url, json=self._body(spec)) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    result.error_kind = http_error_kind(response.status_code)
                    result.error_message = body[:300]
                else:
                    chunks, usage = await self._read_stream(response, result)
                    result.is_ok = True
        except Exception as exc:
            result.error_kind, result.error_message = error_kind(_unwrap(exc)), str(exc)[:300]
        result.done_s = time.perf_counter()
        self._fill(spec, result, chunks, usage)

    async def _read_stream(
        self, response: httpx.Response, result: RequestResult
    ) -> tuple[int, dict[str, Any] | None]:
        usage: dict[str, Any] | None = None
        chunks = 0
        last = result.sent_s
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("error"):
                raise _StreamError(event["error"])
            usage = event.get("usage") or usage
            choices = event.get("choices") or []
            if not choices or not (choices[0].get("text") or choices[0].get("delta", {}).get("content")):
                continue
            now = time.perf_counter()
            if chunks == 0:
                result.first_token_s = now
            else:
                result.itl_s.append((now - last) * self._time_scale)
            last, chunks = now, chunks + 1
        return chunks, usage

    def _fill(
        self, spec: RequestSpec, result: RequestResult, chunks: int, usage: dict[str, Any] | None
    ) -> None:
        scale = self._time_scale
        result.e2e_s = (result.done_s - result.sent_s) * scale
        result.ttft_s = (
            (result.first_token_s - result.sent_s) * scale if result.first_token_s else result.e2e_s
        )
        result.num_prompt_tokens = len(spec.token_ids)
        result.num_output_tokens = chunks
        if usage:
            result.num_prompt_tokens = int(usage.get("prompt_tokens", result.num_prompt_tokens))
            result.num_output_tokens = int(usage.get("completion_tokens", chunks))
            details = usage.get("prompt_tokens_details") or {}
            if "cached_tokens" in details:
                result.num_cached_tokens, result.has_cache_info = int(details["cached_tokens"] or 0), True
        n = result.num_output_tokens
        result.tpot_s = (result.e2e_s - result.ttft_s) / (n - 1) if n > 1 else 0.0


class _StreamError(Exception):
    """An error event inside an SSE stream (OpenAI-style `{"error": {...}}`)."""

    def __init__(self, error: Any) -> None:
        info = error if isinstance(error, dict) else {"message": str(error)}
        super().__init__(info.get("message", ""))
        code = info.get("code")
        if isinstance(code, int):
            self.code = http_error_kind(code)
        else:  # Supernode's frontend sends the gRPC status name in lower case
            self.code = str(code or info.get("type") or "STREAM_ERROR").upper()


def _unwrap(exc: Exception) -> BaseException:
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(str(exc))
    if isinstance(exc, httpx.TransportError):
        return ConnectionError(str(exc))
    return exc
