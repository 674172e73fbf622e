"""A worker service's real peers, put together: the gRPC fabric, every pool service behind one batching
client, and the time-scaled clock. Service tests pass their own instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.grpc_peers import GrpcFabricClient
from supernode.runtime.peers import FabricClient, PoolClient
from supernode.runtime.pool_batch import BatchingPool
from supernode.runtime.pool_clients import PoolClients
from supernode.runtime.server import Drain

W = TypeVar("W")  # the worker's servicer


def worker_builder(
    service_cls: Callable[[Settings, Clock, FabricClient, PoolClient, Drain], W],
    add_servicer: Callable[[W, grpc.aio.Server], None],
    settings: Settings,
    clock: Clock | None = None,
    fabric: FabricClient | None = None,
    pool: PoolClient | None = None,
) -> Callable[[grpc.aio.Server, Drain], W]:
    """The ServiceHost factory of a worker: real peers (gRPC fabric and pool, scaled clock) unless
    others are given (service tests)."""

    def build(server: grpc.aio.Server, drain: Drain) -> W:
        service = service_cls(
            settings,
            clock or ScaledClock(settings.runtime.time_scale),
            fabric or GrpcFabricClient(settings),
            pool or BatchingPool(PoolClients(settings), settings.kvpool.max_blocks_per_call),
            drain,
        )
        add_servicer(service, server)
        return service

    return build
