"""The prefill gRPC service: protobuf <-> records around `PrefillEngine` (prefill/engine.py).

A request's states (QUEUED -> PREFILLING -> FINISHED: cache lookup and load, batching, store) are the
engine's; this module only translates and hosts it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import grpc

from supernode.prefill.engine import PrefillEngine
from supernode.runtime import codec
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.early_first import EarlyFirst
from supernode.runtime.metrics import start_metrics_server
from supernode.runtime.peers import FabricClient, PoolClient, PrefillResult
from supernode.runtime.server import Drain, stream, unary
from supernode.runtime.worker_peers import worker_builder
from supernode.v1 import common_pb2, prefill_pb2, prefill_pb2_grpc


class PrefillService(prefill_pb2_grpc.PrefillServicer):
    service_names: tuple[str, ...] = (prefill_pb2.DESCRIPTOR.services_by_name["Prefill"].full_name,)

    def __init__(
        self, settings: Settings, clock: Clock, fabric: FabricClient, pool: PoolClient, drain: Drain
    ) -> None:
        self.settings = settings
        self.fabric = fabric
        self.pool = pool
        self.drain = drain
        self.engine = PrefillEngine(settings, clock, fabric, pool)
        self.engine.supervisor.on_fault(drain.fail)  # a failed step loop: NOT_SERVING, RPCs refused

    async def start(self) -> None:
        cfg = self.settings.prefill
        start_metrics_server(cfg.metrics_port, self.settings.runtime.bind_host, self.engine.metrics.registry)
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.fabric.close()
        await self.pool.close()

    @unary()
    async def Prefill(self, request: prefill_pb2.PrefillRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        result = await self.engine.prefill(
            request.request_id, list(request.token_ids), codec.sampling_from_pb(request.sampling),
            sent_s=request.sent_s,
        )  # fmt: skip
        return _response(result)

    @stream()
    async def PrefillStream(  # noqa: N802
        self, request: prefill_pb2.PrefillRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[prefill_pb2.PrefillEvent, None]:
        sampling = codec.sampling_from_pb(request.sampling)
        call = EarlyFirst(
            lambda offer: self.engine.prefill(
                request.request_id, list(request.token_ids), sampling, offer, request.sent_s
            )
        )
        try:
            first = await call.first_token()
            if first is not None:
                yield prefill_pb2.PrefillEvent(first_token=first, first_token_due_s=call.due_s)
            yield prefill_pb2.PrefillEvent(response=_response(await call.result()))
        finally:
            call.cancel()  # the client left: the request leaves the queue

    @unary()
    async def Score(self, request: prefill_pb2.ScoreRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        result = await self.engine.score(
            request.request_id, list(request.segment_ids), list(request.question_ids), request.score_fn
        )
        return prefill_pb2.ScoreResponse(
            score=result.score, queue_s=result.queue_s, compute_s=result.compute_s
        )

    @unary(track=False)
    async def Load(self, request: common_pb2.LoadRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return codec.load_to_pb(self.engine.load(draining=not self.drain.is_admitting))


def _response(result: PrefillResult) -> prefill_pb2.PrefillResponse:
    return prefill_pb2.PrefillResponse(
        first_token=result.first_token,
        kv=codec.kv_to_pb(result.kv),
        num_cached_tokens=result.num_cached_tokens,
        queue_s=result.queue_s,
        load_s=result.load_s,
        compute_s=result.compute_s,
    )


def build(
    settings: Settings,
    clock: Clock | None = None,
    fabric: FabricClient | None = None,
    pool: PoolClient | None = None,
) -> Callable[[grpc.aio.Server, Drain], PrefillService]:
    """The host's factory; tests pass a virtual clock and in-memory peers."""
    return worker_builder(
        PrefillService, prefill_pb2_grpc.add_PrefillServicer_to_server, settings, clock, fabric, pool
    )
