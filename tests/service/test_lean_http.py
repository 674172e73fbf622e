"""The chaos harness's lean HTTP client (benchmarks/lean_http.py) against the real frontend: the same
stream as httpx reads, and error statuses with their bodies skipped."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from benchmarks.lean_http import post_sse
from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.server import serve_in_background
from supernode.runtime.config import Settings
from tests.service.test_frontend_http import OK_BODY

STREAM = OK_BODY | {"max_tokens": 12, "stream": True, "seed": 3}


def collector(into: list[str]) -> Callable[[str], bool]:
    """An `on_data` that keeps every payload and stops at `[DONE]`."""

    def on_data(data: str) -> bool:
        into.append(data)
        return data == "[DONE]"

    return on_data


def texts(payloads: list[str]) -> str:
    return "".join(
        c.get("text") or "" for p in payloads if p != "[DONE]" for c in json.loads(p).get("choices", ())
    )


async def test_the_lean_client_reads_what_httpx_reads() -> None:
    async with serve_fake_router(FakeRouter(max_tokens_limit=100)) as (address, _):
        settings = Settings(router={"address": address, "max_tokens_limit": 1000})
        async with serve_in_background(create_app(settings), settings) as url:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            lean: list[str] = []
            status = await post_sse(host, int(port), "/v1/completions", STREAM, collector(lean))
            async with httpx.AsyncClient(base_url=url) as http:
                resp = await http.post("/v1/completions", json=STREAM)
            reference = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]
            assert status == 200 and lean[-1] == "[DONE]"
            assert texts(lean) == texts(reference) and texts(lean)
            assert len(lean) == len(reference)

            ignored: list[str] = []
            bad = {"model": OK_BODY["model"], "max_tokens": 3}  # no prompt
            status = await post_sse(host, int(port), "/v1/completions", bad, collector(ignored))
            assert status == 400 and not ignored  # an error body is read and dropped, not parsed as events
