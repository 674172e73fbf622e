"""The router's optional bearer token: a server interceptor, the SDK's `token` option, open health."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supernode.router.service import build
from supernode.runtime.auth import BearerTokenInterceptor, token_interceptors
from supernode.runtime.server import ServiceHost
from supernode.sdk import AsyncClient, Client, UnauthenticatedError
from supernode.v1 import decode_pb2_grpc, prefill_pb2_grpc
from tests.conftest import make_settings
from tests.service.test_router import FakeDecode, FakePrefill, start_fake

TOKEN = "s3cret-token"


async def start_router_with_token(host_factory) -> ServiceHost:
    prefill = await start_fake(host_factory, FakePrefill(), prefill_pb2_grpc.add_PrefillServicer_to_server)
    decode = await start_fake(host_factory, FakeDecode(), decode_pb2_grpc.add_DecodeServicer_to_server)
    settings = make_settings(
        router={
            "prefill_addresses": [prefill.address],
            "decode_addresses": [decode.address],
            "auth_token": TOKEN,
        }
    )
    host = ServiceHost(settings, build(settings), 0, token_interceptors(settings.router.auth_token))
    await host.start()
    return host


@pytest.fixture
async def router(host_factory):
    host = await start_router_with_token(host_factory)
    yield host
    await host.drain_and_stop()


async def test_calls_without_the_token_are_unauthenticated(router):
    for token in ("", "wrong", TOKEN + "x"):
        async with AsyncClient(router.address, timeout_s=5, token=token) as client:
            with pytest.raises(UnauthenticatedError, match="bearer token"):
                await client.complete(token_ids=[1, 2], max_tokens=3)
            with pytest.raises(UnauthenticatedError):
                await client.status()


async def test_the_token_admits_streams_and_unary_calls(router):
    async with AsyncClient(router.address, timeout_s=5, token=TOKEN) as client:
        done = await client.complete(token_ids=[1, 2], max_tokens=3)
        assert len(done.token_ids) == 3
        await client.status()


async def test_extra_metadata_rides_along_with_the_token(router):
    async with AsyncClient(router.address, timeout_s=5, token=TOKEN, metadata=[("x-tenant", "a")]) as client:
        assert len((await client.complete(token_ids=[1], max_tokens=2)).token_ids) == 2


async def test_sync_client_sends_the_token(router):
    def call(token: str) -> int:
        with Client(router.address, timeout_s=5, token=token) as client:
            return len(client.complete(token_ids=[1], max_tokens=2).token_ids)

    assert await asyncio.to_thread(call, TOKEN) == 2
    with pytest.raises(UnauthenticatedError):
        await asyncio.to_thread(call, "")


async def test_health_stays_open_for_orchestrators(router):
    async with grpc.aio.insecure_channel(router.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_an_empty_token_means_no_interceptor():
    assert token_interceptors("") == []
    with pytest.raises(ValueError, match="token"):
        BearerTokenInterceptor("")
