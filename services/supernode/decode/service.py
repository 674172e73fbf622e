"""The decode gRPC service: protobuf <-> records around `DecodeEngine` (decode/engine.py).

A request's states (QUEUED on Reserve -> TRANSFERRING -> DECODING -> FINISHED or CANCELLED) are the
engine's; this module only translates and hosts it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import grpc

from supernode.decode.engine import DecodeEngine
from supernode.runtime import codec
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.metrics import start_metrics_server
from supernode.runtime.peers import FabricClient, PoolClient
from supernode.runtime.server import Drain, stream, unary
from supernode.runtime.worker_peers import worker_builder
from supernode.v1 import common_pb2, decode_pb2, decode_pb2_grpc


class DecodeService(decode_pb2_grpc.DecodeServicer):
    service_names: tuple[str, ...] = (decode_pb2.DESCRIPTOR.services_by_name["Decode"].full_name,)

    def __init__(
        self, settings: Settings, clock: Clock, fabric: FabricClient, pool: PoolClient, drain: Drain
    ) -> None:
        self.settings = settings
        self.fabric = fabric
        self.pool = pool
        self.drain = drain
        self.engine = DecodeEngine(settings, clock, fabric, pool)
        self.engine.supervisor.on_fault(drain.fail)  # a failed step loop: NOT_SERVING, RPCs refused

    async def start(self) -> None:
        cfg = self.settings.decode
        start_metrics_server(cfg.metrics_port, self.settings.runtime.bind_host, self.engine.metrics.registry)
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.fabric.close()
        await self.pool.close()

    @unary()
    async def Reserve(self, request: decode_pb2.ReserveRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        reservation = self.engine.reserve(request.request_id, request.num_prompt_tokens, request.max_tokens)
        return decode_pb2.ReserveResponse(
            reservation_id=reservation.reservation_id,
            dp_rank=reservation.dp_rank,
            die=codec.die_to_pb(reservation.die),
        )

    @unary(track=False)
    async def CancelReservation(  # noqa: N802
        self, request: decode_pb2.CancelReservationRequest, context: grpc.aio.ServicerContext
    ) -> decode_pb2.CancelReservationResponse:
        return decode_pb2.CancelReservationResponse(
            cancelled=self.engine.cancel_reservation(request.reservation_id)
        )

    @stream()
    async def Decode(self, request: decode_pb2.DecodeRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        chunks = self.engine.decode(
            request.reservation_id, codec.kv_from_pb(request.kv), request.first_token, request.max_tokens,
            codec.sampling_from_pb(request.sampling), request.num_resumed_tokens,
        )  # fmt: skip
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield decode_pb2.DecodeChunk(
                    token_ids=chunk.token_ids,
                    finished=chunk.finished,
                    finish_reason=chunk.finish_reason,
                    kv_pull_s=chunk.kv_pull_s,
                    num_steps=chunk.num_steps,
                )

    @unary(track=False)
    async def Load(self, request: common_pb2.LoadRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return codec.load_to_pb(self.engine.load(draining=not self.drain.is_admitting))


def build(
    settings: Settings,
    clock: Clock | None = None,
    fabric: FabricClient | None = None,
    pool: PoolClient | None = None,
) -> Callable[[grpc.aio.Server, Drain], DecodeService]:
    """The host's factory; tests pass a virtual clock and in-memory peers."""
    return worker_builder(
        DecodeService, decode_pb2_grpc.add_DecodeServicer_to_server, settings, clock, fabric, pool
    )
