"""A gRPC server stream whose client stops reading is cut off once a write has waited
`runtime.stream_stall_timeout_s` (runtime/stall.py), over real gRPC on loopback; a slow reader that
keeps reading is not."""

from __future__ import annotations

import asyncio
import time

import grpc

from supernode.runtime.channels import open_channel
from supernode.runtime.server import Drain, stream
from supernode.runtime.stall import STALLED_TOTAL
from supernode.v1 import router_pb2, router_pb2_grpc
from tests.conftest import make_settings

CHUNK_TEXT = "x" * (256 * 1024)  # a few chunks fill any flow-control window
NUM_CHUNKS = 64  # 16 MiB in all


class BigStreams(router_pb2_grpc.RouterServicer):
    service_names = ("supernode.v1.Router",)

    def __init__(self, settings, drain: Drain) -> None:  # noqa: ANN001
        self.settings = settings
        self.drain = drain
        self.num_closed = 0  # generators whose `finally` ran
        self.num_written = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @stream()
    async def Generate(self, request, context):  # noqa: ANN001, ANN201, N802
        try:
            for k in range(NUM_CHUNKS):
                yield router_pb2.GenerateChunk(text=CHUNK_TEXT, finished=k == NUM_CHUNKS - 1)
                self.num_written += 1
        finally:
            self.num_closed += 1


async def start(host_factory, stall_s: float):  # noqa: ANN001, ANN201
    settings = make_settings(runtime={"stream_stall_timeout_s": stall_s})

    def build(server: grpc.aio.Server, drain: Drain) -> BigStreams:
        service = BigStreams(settings, drain)
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return service

    host = await host_factory(settings, build)
    return host.service, open_channel(host.address, settings)


async def test_a_client_that_stops_reading_is_cut_off_and_its_handler_closed(host_factory):
    service, channel = await start(host_factory, stall_s=0.5)
    before = STALLED_TOTAL.labels("Generate")._value.get()
    try:
        call = router_pb2_grpc.RouterStub(channel).Generate(router_pb2.GenerateRequest(prompt="x"))
        assert (await call.read()).text == CHUNK_TEXT  # ... and never another
        started = time.monotonic()
        while service.num_closed == 0:
            assert time.monotonic() - started < 10, "a stalled reader's stream was kept"
            await asyncio.sleep(0.05)
        assert service.num_written < NUM_CHUNKS - 1  # cut off well before the end
        assert STALLED_TOTAL.labels("Generate")._value.get() == before + 1
        call.cancel()
    finally:
        await channel.close()


async def test_a_slow_reader_that_keeps_reading_gets_everything(host_factory):
    service, channel = await start(host_factory, stall_s=2.0)
    try:
        call = router_pb2_grpc.RouterStub(channel).Generate(router_pb2.GenerateRequest(prompt="x"))
        chunks = []
        async for chunk in call:
            chunks.append(chunk)
            await asyncio.sleep(0.02)
        assert len(chunks) == NUM_CHUNKS and chunks[-1].finished
    finally:
        await channel.close()
