"""Admission and abandoned work at the HTTP frontend (frontend/admission.py), over real HTTP and gRPC."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx

from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.server import serve_in_background
from supernode.runtime.config import Settings
from tests.service.test_frontend_http import OK_BODY, error_of, start


async def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_beyond_the_bound_is_an_immediate_429_with_retry_after_and_counted() -> None:
    async for stack in start(FakeRouter(chunk_delay_s=0.05), max_inflight=2, max_queue_wait_s=0.0):
        body = OK_BODY | {"max_tokens": 10}

        async def timed(stack=stack, body=body) -> tuple[httpx.Response, float]:  # noqa: ANN001
            started = time.monotonic()
            resp = await stack.post("/v1/completions", body)
            return resp, time.monotonic() - started

        results = await asyncio.gather(*(timed() for _ in range(6)))
        ok = [r for r, _ in results if r.status_code == 200]
        shed = [(r, s) for r, s in results if r.status_code == 429]
        assert len(ok) == 2 and len(shed) == 4, [r.status_code for r, _ in results]
        for resp, seconds in shed:
            assert resp.headers["Retry-After"] == "1" and seconds < 0.3
            assert error_of(resp, 429)["code"] == "resource_exhausted"
        assert len(stack.router.requests) == 2  # the shed ones never reached the router
        metrics = (await stack.http.get("/metrics")).text
        assert 'supernode_shed_total{reason="full",where="frontend"} 4.0' in metrics
        assert 'supernode_http_requests_total{path="/v1/completions",status="429"} 4.0' in metrics
        await stack.assert_serving()


async def test_a_bounded_wait_admits_requests_that_get_a_slot_in_time() -> None:
    async for stack in start(FakeRouter(chunk_delay_s=0.02), max_inflight=1, max_queue_wait_s=5.0):
        results = await asyncio.gather(*(stack.post("/v1/completions", OK_BODY) for _ in range(3)))
        assert [r.status_code for r in results] == [200, 200, 200]


async def test_per_client_bound() -> None:
    async for stack in start(
        FakeRouter(chunk_delay_s=0.05), max_inflight=10, max_inflight_per_client=1, max_queue_wait_s=0
    ):
        body = OK_BODY | {"max_tokens": 10}
        results = await asyncio.gather(*(stack.post("/v1/completions", body) for _ in range(3)))
        assert sorted(r.status_code for r in results) == [200, 429, 429]


async def test_non_streaming_client_that_leaves_cancels_its_request() -> None:
    async for stack in start(FakeRouter(chunk_delay_s=0.05)):
        body = OK_BODY | {"max_tokens": 200}  # 10 s of chunks
        try:
            await stack.post("/v1/completions", body, timeout=0.3)
        except httpx.TimeoutException:
            pass
        router = stack.router
        assert await wait_for(lambda r=router: r.num_cancelled == 1, 2.0), "router call not cancelled"
        await asyncio.sleep(0.1)
        metrics = (await stack.http.get("/metrics")).text
        assert 'supernode_http_abandoned_total{kind="disconnect"} 1.0' in metrics
        await stack.assert_serving()


async def test_streaming_client_that_stops_reading_is_cut_off() -> None:
    router = FakeRouter(max_tokens_limit=32768)
    async with serve_fake_router(router) as (address, router):
        settings = Settings(
            router={"address": address, "max_tokens_limit": 32768},  # type: ignore[arg-type]
            frontend={"stream_stall_timeout_s": 0.5},  # type: ignore[arg-type]
        )
        async with serve_in_background(create_app(settings), settings) as url:
            host, port = url.removeprefix("http://").split(":")
            body = json.dumps(OK_BODY | {"max_tokens": 32768, "stream": True}).encode()  # ~6 MB of SSE
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            head = (
                f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)  # ... and never read
            stalled = 'supernode_http_abandoned_total{kind="stalled"} 1.0'
            try:
                async with httpx.AsyncClient(base_url=url) as http:
                    deadline = time.monotonic() + 20
                    while stalled not in (await http.get("/metrics")).text:
                        assert time.monotonic() < deadline, "a client that stopped reading was not cut off"
                        await asyncio.sleep(0.1)
                    # the router stream goes at the cut, while the client still holds its unread bytes
                    assert await wait_for(lambda: router.num_cancelled == 1, 1.0), "router stream kept"
                    assert (await http.post("/v1/completions", json=OK_BODY)).status_code == 200
                sock.setblocking(False)
                received = 0
                for _ in range(2000):  # the server closed the connection: draining it ends in EOF
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        await asyncio.sleep(0.005)
                        continue
                    if not data:
                        break
                    received += len(data)
                else:
                    raise AssertionError("the stalled connection was left open")
                assert 0 < received < 6_000_000  # cut off well before the end
                # once the connection is gone, the relay is closed: the request ends as cancelled
                cancelled = 'supernode_request_errors_total{code="CANCELLED",model_name="deepseek-r1"} 1.0'
                async with httpx.AsyncClient(base_url=url) as http:
                    for _ in range(50):
                        text = (await http.get("/metrics")).text
                        if cancelled in text:
                            break
                        await asyncio.sleep(0.1)
                    else:
                        errors = [line for line in text.splitlines() if "request_errors_total{" in line]
                        raise AssertionError(f"the cut-off request was not counted as cancelled: {errors}")
            finally:
                sock.close()


async def test_x_request_id_is_limited_and_named() -> None:
    async for stack in start(FakeRouter()):
        resp = await stack.post("/v1/completions", OK_BODY, headers={"X-Request-Id": "x" * 129})
        error = error_of(resp, 400)
        assert error["param"] == "X-Request-Id" and "at most 128 characters" in str(error["message"])
        ok = await stack.post("/v1/completions", OK_BODY, headers={"X-Request-Id": "mine-1"})
        assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "mine-1"


async def test_after_a_router_refusal_the_load_beyond_it_is_shed_at_the_door() -> None:
    async for stack in start(FakeRouter(chunk_delay_s=0.05), max_inflight=50, max_inflight_per_client=0):
        slow = OK_BODY | {"max_tokens": 30}  # 1.5 s of chunks each
        held = [asyncio.ensure_future(stack.post("/v1/completions", slow)) for _ in range(2)]
        router = stack.router
        assert await wait_for(lambda r=router: len(r.requests) == 2), "the two slow requests reach the router"
        refused = await stack.post("/v1/completions", OK_BODY | {"prompt": "!error:RESOURCE_EXHAUSTED"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"  # the router's 2.5 s
        num_seen = len(router.requests)
        started = time.monotonic()
        door = await stack.post("/v1/completions", OK_BODY)  # 2 in flight: the router was full at 2
        assert door.status_code == 429 and door.headers["Retry-After"] == "1"
        assert time.monotonic() - started < 0.5 and len(router.requests) == num_seen  # never reached it
        metrics = (await stack.http.get("/metrics")).text
        assert 'supernode_shed_total{reason="backend_full",where="frontend"} 1.0' in metrics
        assert all(r.status_code == 200 for r in await asyncio.gather(*held))
        await stack.assert_serving()  # fewer in flight than when the router refused: it passes again
