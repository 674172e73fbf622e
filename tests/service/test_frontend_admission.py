"""Admission and abandoned work at the HTTP frontend (frontend/admission.py), over real HTTP and gRPC.

"At once" is shown by state, not by a stopwatch: the router holds the admitted requests' streams
until the test lets them go, so a refusal that arrives while they are held did not wait for a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator

import grpc
import httpx

from supernode.frontend.admission import AdmissionMiddleware
from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.server import serve_in_background
from supernode.runtime.admission import Gate
from supernode.runtime.config import Settings
from supernode.v1 import router_pb2
from tests.service.test_frontend_http import MAX_BODY, OK_BODY, Stack, error_of, start


async def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


class HeldRouter(FakeRouter):
    """A FakeRouter whose streams stop before their first chunk until `release()`: the requests stay
    admitted and in flight for as long as a test needs (no chunk delays to outrun)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()
        self.num_active = 0  # streams being served now (held or not)
        self.max_active = 0

    def release(self) -> None:
        self.released.set()

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        self.num_active += 1
        self.max_active = max(self.max_active, self.num_active)
        try:
            async for chunk in super().Generate(request, context):
                await self.released.wait()
                yield chunk
        finally:
            self.num_active -= 1


@contextlib.asynccontextmanager
async def serving(router: FakeRouter, **frontend: object) -> AsyncIterator[Stack]:
    """`start` as a context: the servers stop when the block ends, failing tests included (left to
    the event loop's finaliser instead, a stack with requests still waiting can crash the process)."""
    async with contextlib.aclosing(start(router, **frontend)) as stacks:
        yield await anext(stacks)


@contextlib.asynccontextmanager
async def serving_gated(router: FakeRouter, **frontend: object) -> AsyncIterator[tuple[Stack, Gate]]:
    """`serving` that also yields the frontend's admission gate, to see who waits at it."""
    async with serving_admission(router, **frontend) as (stack, layer):
        yield stack, layer.gate


@contextlib.asynccontextmanager
async def serving_admission(
    router: FakeRouter, **frontend: object
) -> AsyncIterator[tuple[Stack, AdmissionMiddleware]]:
    """`serving` that also yields the frontend's admission middleware."""
    async with serve_fake_router(router) as (address, router):
        settings = Settings(
            router={"address": address, "max_tokens_limit": 1000},
            frontend={"max_body_bytes": MAX_BODY, **frontend},
        )
        app = create_app(settings)
        async with serve_in_background(app, settings) as url:
            layer = app.middleware_stack  # built at startup: the middlewares, outermost first
            while not isinstance(layer, AdmissionMiddleware):
                layer = layer.app  # type: ignore[union-attr]
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                yield Stack(http, router), layer


@contextlib.asynccontextmanager
async def posted(
    stack: Stack, router: HeldRouter, num: int
) -> AsyncIterator[list[asyncio.Task[httpx.Response]]]:
    """`num` concurrent posts, held at the router while the block runs; all answered after it (also
    when an assertion fails inside: no request is left running past the test)."""
    posts = [asyncio.create_task(stack.post("/v1/completions", OK_BODY)) for _ in range(num)]
    try:
        yield posts
    finally:
        router.release()
        await asyncio.gather(*posts, return_exceptions=True)


async def answers(stack: Stack, num: int) -> list[httpx.Response]:
    """The answers to `num` concurrent posts; every post has ended when this returns or raises."""
    results = await asyncio.gather(
        *(stack.post("/v1/completions", OK_BODY) for _ in range(num)), return_exceptions=True
    )
    failed = [r for r in results if not isinstance(r, httpx.Response)]
    assert not failed, f"no answer before the client gave up (they waited): {failed!r}"
    return [r for r in results if isinstance(r, httpx.Response)]


async def test_beyond_the_bound_is_an_immediate_429_with_retry_after_and_counted() -> None:
    router = HeldRouter()
    async with serving(router, max_inflight=2, max_queue_wait_s=0.0) as stack:
        async with posted(stack, router, 2) as held:
            assert await wait_for(lambda: len(router.requests) == 2), "the two admitted reach the router"
            shed = await answers(stack, 4)
            # refused while both slots are still taken: none came free, so none of these waited for one
            assert not any(post.done() for post in held) and router.num_active == 2
            for resp in shed:
                assert error_of(resp, 429)["code"] == "resource_exhausted"
                assert resp.headers["Retry-After"] == "1"
            assert len(router.requests) == 2  # the shed ones never reached the router
        assert [post.result().status_code for post in held] == [200, 200]
        metrics = (await stack.http.get("/metrics")).text
        assert 'supernode_shed_total{reason="full",where="frontend"} 4.0' in metrics
        assert 'supernode_http_requests_total{path="/v1/completions",status="429"} 4.0' in metrics
        await stack.assert_serving()


async def test_a_bounded_wait_admits_requests_that_get_a_slot_in_time() -> None:
    router = HeldRouter()
    async with serving_gated(router, max_inflight=1, max_queue_wait_s=5.0) as (stack, gate):
        async with posted(stack, router, 3) as posts:
            assert await wait_for(lambda: len(router.requests) == 1 and gate.num_waiting == 2), (
                f"one admitted, two waiting: {len(router.requests)} at the router, {gate.num_waiting} waiting"
            )
        assert [post.result().status_code for post in posts] == [200, 200, 200]
        assert len(router.requests) == 3 and router.max_active == 1  # one slot: served one at a time


async def test_per_client_bound() -> None:
    router = HeldRouter()
    async with serving(router, max_inflight=10, max_inflight_per_client=1, max_queue_wait_s=0) as stack:
        async with posted(stack, router, 1) as (first,):
            assert await wait_for(lambda: len(router.requests) == 1)
            refused = await answers(stack, 2)
            assert not first.done()  # refused while this client's one request is in flight
            for resp in refused:
                assert error_of(resp, 429)["code"] == "resource_exhausted"
        assert first.result().status_code == 200 and len(router.requests) == 1
        metrics = (await stack.http.get("/metrics")).text
        assert 'supernode_shed_total{reason="per_key",where="frontend"} 2.0' in metrics


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
            router={"address": address, "max_tokens_limit": 32768},
            frontend={"stream_stall_timeout_s": 0.5},
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
    router = HeldRouter()
    async with serving(router, max_inflight=50, max_inflight_per_client=0) as stack:
        async with posted(stack, router, 2) as held:
            assert await wait_for(lambda: len(router.requests) == 2), "the two held requests reach the router"
            refused = await stack.post("/v1/completions", OK_BODY | {"prompt": "!error:RESOURCE_EXHAUSTED"})
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"  # the router's 2.5 s
            num_seen = len(router.requests)
            door = await stack.post("/v1/completions", OK_BODY)  # 2 in flight: the router was full at 2
            assert door.status_code == 429 and door.headers["Retry-After"] == "1"
            assert len(router.requests) == num_seen  # refused at the door: it never reached the router...
            assert not any(post.done() for post in held)  # ...while the two were still in flight
            metrics = (await stack.http.get("/metrics")).text
            assert 'supernode_shed_total{reason="backend_full",where="frontend"} 1.0' in metrics
        assert all(post.result().status_code == 200 for post in held)
        await stack.assert_serving()  # fewer in flight than when the router refused: it passes again


class StillLoop:
    """Stands in for the frontend's LoopLag: reads `value` (the real one is measured in
    tests/unit/test_loop_lag.py; here it is what the frontend does with it)."""

    def __init__(self, lag_s: float) -> None:
        self.value = lag_s

    def lag_s(self) -> float:
        return self.value


async def test_a_frontend_whose_loop_is_behind_refuses_at_the_door_and_tells_the_router_its_wait() -> None:
    router = FakeRouter()
    async with serving_admission(router, max_queue_delay_s=0.3) as (stack, layer):
        still = StillLoop(0.5)
        layer.loop_lag = still  # type: ignore[assignment]
        assert layer.start_bound is not None
        layer.start_bound.loop_lag = still.lag_s
        refused = await stack.post("/v1/completions", OK_BODY)
        assert error_of(refused, 429)["code"] == "resource_exhausted"
        assert "first token 0.50s exceeds the 0.3s" in refused.json()["error"]["message"]
        assert not router.requests  # refused at the door: the router never saw it
        metrics = (await stack.http.get("/metrics")).text
        assert 'supernode_shed_total{reason="queue_delay",where="frontend"} 1.0' in metrics
        still.value = 0.2  # behind, within the bound: admitted, the lag counted as waiting already
        await stack.assert_serving()
        assert len(router.queued_s) == 1 and router.queued_s[0] >= 0.2


class LateRouter(FakeRouter):
    """A FakeRouter whose streams' first chunks leave `delay_s` late while `delay_s` is set: a first
    token held up after the router (on its way back), as far as the frontend can tell."""

    def __init__(self) -> None:
        super().__init__()
        self.delay_s = 0.0

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        await asyncio.sleep(self.delay_s)
        async for chunk in super().Generate(request, context):
            yield chunk


async def test_first_tokens_that_come_back_late_close_the_frontends_door_until_they_recover() -> None:
    router = LateRouter()
    async with serving_admission(router, max_queue_delay_s=0.3) as (stack, layer):
        await stack.assert_serving()  # served alone: how long a first token takes with nothing ahead
        router.delay_s = 0.5
        await stack.assert_serving()  # admitted (nothing known against it), its first token 0.5 s late
        num_seen = len(router.requests)
        refused = await stack.post("/v1/completions", OK_BODY)
        assert error_of(refused, 429)["code"] == "resource_exhausted"
        assert len(router.requests) == num_seen  # the frontend's own bound: never reached the router
        router.delay_s = 0.0
        assert layer.start_bound is not None
        layer.start_bound.clock = lambda: time.monotonic() + 10  # the late token has left the window
        await stack.assert_serving()
