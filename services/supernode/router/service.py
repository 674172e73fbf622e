"""The router gRPC service: protobuf <-> records around `RouterEngine` (router/engine.py).

A request's states (QUEUED -> PREFILLING -> TRANSFERRING -> DECODING -> FINISHED, FAILED or
CANCELLED), retries and recompute are the engine's; this module translates, detokenizes for the
client, and feeds the serving metrics from the chunks as they pass.
"""

from __future__ import annotations

import contextlib

import grpc

from supernode.core import tokens
from supernode.core.request import Request
from supernode.router.engine import OutputChunk, RouterEngine
from supernode.runtime import codec
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.errors import SupernodeError
from supernode.runtime.grpc_peers import GrpcDecodePeer, GrpcPrefillPeer
from supernode.runtime.metrics import ServingMetrics, start_metrics_server
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
        )  # fmt: skip
        self.metrics = ServingMetrics(settings.frontend.model_name)

    async def start(self) -> None:
        cfg = self.settings.router
        start_metrics_server(cfg.metrics_port, self.settings.runtime.bind_host, self.metrics.registry)
        self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    @stream()
    async def Generate(self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        record = self.engine.make_request(
            request.request_id, request.prompt, request.token_ids, request.max_tokens,
            codec.sampling_from_pb(request.sampling),
        )  # fmt: skip
        tracker = self.metrics.on_arrival()
        detok = tokens.IncrementalDetokenizer()
        started = last = self.clock.now()
        run = self.engine.generate(record, request.deadline_s, on_dispatch=tracker.on_start)
        try:
            async with contextlib.aclosing(run) as chunks:
                async for chunk in chunks:
                    now = self.clock.now()
                    if record.num_generated == chunk.num_tokens:  # the first chunk
                        tracker.on_first_token(now - started)
                    else:
                        tracker.on_token(now - last)
                    last = now
                    yield self._chunk(record, chunk, detok)
            final = self._final(record, detok)
            tracker.on_finish_stats(final.stats, final.finish_reason)
            yield final
        except SupernodeError as err:
            tracker.on_error(err.code)
            raise
        except BaseException:
            tracker.on_error("CANCELLED")
            raise

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

    @staticmethod
    def _chunk(
        record: Request, chunk: OutputChunk, detok: tokens.IncrementalDetokenizer
    ) -> router_pb2.GenerateChunk:
        return router_pb2.GenerateChunk(
            request_id=record.request_id, token_ids=chunk.token_ids, text=detok.feed(chunk.token_ids)
        )

    @staticmethod
    def _final(record: Request, detok: tokens.IncrementalDetokenizer) -> router_pb2.GenerateChunk:
        stats = router_pb2.RequestStats(
            num_prompt_tokens=record.num_prompt_tokens,
            num_output_tokens=record.num_generated,
            num_cached_tokens=record.num_cached_tokens,
            ttft_s=record.ttft_s,
            tpot_s=record.tpot_s,
            e2e_s=record.e2e_s,
            prefill_queue_s=record.prefill_queue_s,
            prefill_compute_s=record.prefill_compute_s,
            cache_load_s=record.cache_load_s,
            kv_pull_s=record.kv_pull_s,
            prefill_worker=record.prefill_worker,
            decode_worker=record.decode_worker,
        )
        return router_pb2.GenerateChunk(
            request_id=record.request_id, text=detok.flush(), finished=True,
            finish_reason=record.finish_reason, stats=stats,
        )  # fmt: skip


def build(settings: Settings, clock: Clock | None = None, engine: RouterEngine | None = None):  # type: ignore[no-untyped-def]
    def _build(server: grpc.aio.Server, drain: Drain) -> RouterService:
        service = RouterService(settings, clock or ScaledClock(settings.runtime.time_scale), drain, engine)
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return service

    return _build
