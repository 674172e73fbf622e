"""The loadgen's HTTP target against a tiny OpenAI-compatible SSE server (uvicorn on 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from supernode.loadgen.http_target import HttpTarget, completions_url
from supernode.loadgen.scenarios import preset
from supernode.loadgen.stats import Deployment
from supernode.loadgen.suite import run_folder, run_suite

TOKEN_GAP_S = 0.002


def _stub_app() -> FastAPI:
    app = FastAPI()
    state = {"count": 0}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await request.json()
        state["count"] += 1
        if state["count"] % 5 == 0:
            return JSONResponse(
                {"error": {"message": "queue full", "type": "rate_limit_error"}}, status_code=429
            )
        assert body["stream"] and body["stream_options"] == {"include_usage": True}
        num_prompt = len(body["prompt"].split())

        async def events() -> AsyncIterator[str]:
            for i in range(body["max_tokens"]):
                await asyncio.sleep(TOKEN_GAP_S)
                yield "data: " + json.dumps({"choices": [{"index": 0, "text": f" w{i}"}]}) + "\n\n"
            usage = {
                "prompt_tokens": num_prompt,
                "completion_tokens": body["max_tokens"],
                "prompt_tokens_details": {"cached_tokens": num_prompt // 2},
            }
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_stub_app(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task


def test_completions_url_forms() -> None:
    for form in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/completions"):
        assert completions_url(form) == "http://h:8000/v1/completions"


async def test_http_run_measures_stream_usage_and_errors(endpoint: str, tmp_path: Path) -> None:
    deploy = Deployment(16, 1.0)
    cfg = preset("mixed", deploy).override(
        workload="synthetic", request_rates=(100.0,), num_requests=20, input_len="64", output_len="8"
    )
    async with HttpTarget(endpoint, "deepseek-r1", time_scale=2.0, timeout_s=10.0) as target:
        out = await run_suite(
            cfg, target, endpoint, deploy, 2.0, run_folder(tmp_path, "http"), write_pngs=False
        )
    m = out.results
    assert (m["completed"], m["failed"]) == (16, 4)
    assert m["errors"] == {"RESOURCE_EXHAUSTED": 4}
    assert m["total_input_tokens"] == 16 * 64 and m["total_output_tokens"] == 16 * 8
    assert m["cache_hit_rate"] == pytest.approx(0.5)
    assert m["mean_itl_ms"] >= TOKEN_GAP_S * 1000 * 2 * 0.8  # wall gaps x time_scale
    assert m["mean_tpot_ms"] == pytest.approx(m["mean_itl_ms"], rel=0.3)
    assert m["mean_ttft_ms"] > 0 and m["mean_e2el_ms"] > m["mean_ttft_ms"]
    assert out.folder.name.startswith("http-")


async def test_http_target_reports_connection_errors(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    deploy = Deployment(1, 1.0)
    cfg = preset("mixed", deploy).override(
        workload="synthetic", num_requests=3, input_len="8", output_len="2"
    )
    async with HttpTarget(dead, "m", timeout_s=2.0) as target:
        out = await run_suite(cfg, target, dead, deploy, 1.0, run_folder(tmp_path, "dead"), write_pngs=False)
    assert out.results["errors"] == {"CONNECTION": 3}
