"""The router gRPC service: protobuf in, the router's front and engine, protobuf out.

A request's states (QUEUED -> PREFILLING -> TRANSFERRING -> DECODING -> FINISHED, FAILED or
CANCELLED), retries and recompute are `RouterEngine`'s (router/engine.py); tokenization, over-long
prompts, the end-of-sequence plan, detokenization and the serving metrics are `RouterFront`'s
(router/front.py). This module receives the calls (a chunked upload's spool included) and answers them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from supernode.router import long_context, prompt_source
from supernode.router.engine import RouterEngine
from supernode.router.fabric_faults import GrpcFabricFaults
from supernode.router.front import RouterFront
from supernode.runtime import codec
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.grpc_peers import GrpcDecodePeer, GrpcPrefillPeer
from supernode.runtime.metrics import start_metrics_server
from supernode.runtime.server import Drain, stream, unary
from supernode.v1 import router_pb2, router_pb2_grpc


class RouterService(router_pb2_grpc.RouterServicer):
    service_names: tuple[str, ...] = (router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,)

    def __init__(
        self, settings: Settings, clock: Clock, drain: Drain, engine: RouterEngine | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.drain = drain
        self.engine = engine or RouterEngine(
            settings, clock,
            [GrpcPrefillPeer(a, settings) for a in settings.router.prefill_addresses],
            [GrpcDecodePeer(a, settings) for a in settings.router.decode_addresses],
            GrpcFabricFaults(settings),
        )  # fmt: skip
        self.front = RouterFront(settings, clock, self.engine)
        self.metrics = self.front.metrics

    async def start(self) -> None:
        cfg = self.settings.router
        start_metrics_server(cfg.metrics_port, self.settings.runtime.bind_host, self.metrics.registry)
        self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    @stream()
    async def Generate(self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        source = prompt_source.ListSource(self.front.tokenize(request))
        async for chunk in self.front.generate(request, source):
            yield chunk

    @stream()
    async def GenerateUpload(  # noqa: N802
        self, request_iterator: AsyncIterator[router_pb2.UploadChunk], context: grpc.aio.ServicerContext
    ):
        encode = self.front.tokenizer.encode
        request, source = await prompt_source.receive(request_iterator, self.settings, encode)
        try:  # the spool file goes however the request ends
            long_context.validate_header(request, source.num_tokens, self.settings)
            async for chunk in self.front.generate(request, source):
                yield chunk
        finally:
            source.close()

    @unary(track=False)
    async def Status(self, request: router_pb2.StatusRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        await self.engine.workers.poll_once()
        return router_pb2.StatusResponse(
            workers=[
                router_pb2.WorkerStatus(
                    address=w.address, role=w.role, healthy=w.is_healthy, load=codec.load_to_pb(w.load),
                    num_inflight=w.num_inflight,
                )
                for w in self.engine.workers.all
            ]
        )  # fmt: skip


def build(
    settings: Settings, clock: Clock | None = None, engine: RouterEngine | None = None
) -> Callable[[grpc.aio.Server, Drain], RouterService]:
    def _build(server: grpc.aio.Server, drain: Drain) -> RouterService:
        service = RouterService(settings, clock or ScaledClock(settings.runtime.time_scale), drain, engine)
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return service

    return _build
