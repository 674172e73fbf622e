"""Clients workers use to reach the fabric and the KV pool, behind Protocols so tests can swap them.

Every call has a timeout; failures surface as domain errors (runtime/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from supernode.runtime.channels import open_channel
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.errors import FailedPreconditionError, SupernodeError, UnavailableError, from_rpc_error
from supernode.v1 import common_pb2, fabric_pb2, fabric_pb2_grpc, kvpool_pb2, kvpool_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransferResult:
    start_s: float  # emulated
    finish_s: float  # emulated

    @property
    def duration_s(self) -> float:
        return self.finish_s - self.start_s


class FabricClient(Protocol):
    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[common_pb2.Die]: ...

    async def renew(self, worker_id: str) -> int: ...

    async def release(self, worker_id: str) -> None: ...

    async def transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> TransferResult: ...

    async def close(self) -> None: ...


class PoolClient(Protocol):
    async def lookup(self, keys: Sequence[str]) -> int: ...

    async def put(self, blocks: Sequence[kvpool_pb2.Block]) -> kvpool_pb2.PutResponse: ...

    async def get(self, keys: Sequence[str]) -> kvpool_pb2.GetResponse: ...

    async def close(self) -> None: ...


_KINDS = {"die": fabric_pb2.ENDPOINT_KIND_DIE, "cpu": fabric_pb2.ENDPOINT_KIND_CPU}
_PLANES = {"ub": fabric_pb2.PLANE_UB, "rdma": fabric_pb2.PLANE_RDMA, "vpc": fabric_pb2.PLANE_VPC}


async def _call(rpc: object, request: object, timeout_s: float) -> object:
    try:
        return await rpc(request, timeout=timeout_s)  # type: ignore[operator]
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


class GrpcFabricClient:
    def __init__(self, settings: Settings) -> None:
        self._channel = open_channel(settings.fabric.address, settings)
        self._stub = fabric_pb2_grpc.FabricStub(self._channel)
        self._timeout = settings.runtime.rpc_timeout_s

    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[common_pb2.Die]:
        request = fabric_pb2.LeaseRequest(worker_id=worker_id, role=role, num_dies=num_dies)
        reply = await _call(self._stub.Lease, request, self._timeout)
        return list(reply.dies)  # type: ignore[attr-defined]

    async def renew(self, worker_id: str) -> int:
        reply = await _call(self._stub.Renew, fabric_pb2.RenewRequest(worker_id=worker_id), self._timeout)
        return int(reply.num_dies)  # type: ignore[attr-defined]

    async def release(self, worker_id: str) -> None:
        await _call(self._stub.Release, fabric_pb2.ReleaseRequest(worker_id=worker_id), self._timeout)

    async def transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> TransferResult:
        request = fabric_pb2.TransferRequest(
            src=fabric_pb2.Endpoint(kind=_KINDS[src[0]], index=src[1]),
            dst=fabric_pb2.Endpoint(kind=_KINDS[dst[0]], index=dst[1]),
            num_bytes=num_bytes,
            plane=_PLANES[plane],
            tag=tag,
        )
        # Transfers take emulated time; the fabric answers when done, so no short timeout here.
        reply = await _call(self._stub.Transfer, request, self._timeout * 10)
        return TransferResult(reply.start_s, reply.finish_s)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self._channel.close()


class GrpcPoolClient:
    def __init__(self, settings: Settings) -> None:
        self._channel = open_channel(settings.kvpool.address, settings)
        self._stub = kvpool_pb2_grpc.KvPoolStub(self._channel)
        self._timeout = settings.runtime.rpc_timeout_s
        self.namespace = settings.kvpool.namespace

    async def lookup(self, keys: Sequence[str]) -> int:
        request = kvpool_pb2.LookupRequest(namespace=self.namespace, block_keys=list(keys))
        reply = await _call(self._stub.Lookup, request, self._timeout)
        return int(reply.num_cached_blocks)  # type: ignore[attr-defined]

    async def put(self, blocks: Sequence[kvpool_pb2.Block]) -> kvpool_pb2.PutResponse:
        request = kvpool_pb2.PutRequest(namespace=self.namespace, blocks=list(blocks))
        return await _call(self._stub.Put, request, self._timeout)  # type: ignore[return-value]

    async def get(self, keys: Sequence[str]) -> kvpool_pb2.GetResponse:
        request = kvpool_pb2.GetRequest(namespace=self.namespace, block_keys=list(keys))
        return await _call(self._stub.Get, request, self._timeout)  # type: ignore[return-value]

    async def close(self) -> None:
        await self._channel.close()


class DieLease:
    """A worker's dies: leased at start (retrying while the fabric comes up), renewed, released."""

    def __init__(self, fabric: FabricClient, worker_id: str, role: str, num_dies: int, ttl_s: float) -> None:
        self.fabric = fabric
        self.worker_id = worker_id
        self.role = role
        self.num_dies = num_dies
        self.ttl_s = ttl_s
        self.dies: list[common_pb2.Die] = []
        self._task: asyncio.Task[None] | None = None

    async def acquire(self, attempts: int = 50) -> None:
        for attempt in range(attempts):
            try:
                self.dies = await self.fabric.lease(self.worker_id, self.role, self.num_dies)
                break
            except UnavailableError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.2)
        self._task = asyncio.create_task(self._heartbeat(), name=f"{self.worker_id}-lease")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                try:
                    await self.fabric.renew(self.worker_id)
                except FailedPreconditionError:
                    log.warning("lease of %s expired; leasing again", self.worker_id)
                    self.dies = await self.fabric.lease(self.worker_id, self.role, self.num_dies)
            except SupernodeError as err:
                log.warning("lease heartbeat failed: %s", err.message)

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            await self.fabric.release(self.worker_id)
        except SupernodeError as err:
            log.warning("could not release dies: %s", err.message)


def worker_builder(
    service_cls: Callable[..., Any],
    add_servicer: Callable[[Any, grpc.aio.Server], None],
    settings: Settings,
    clock: Clock | None = None,
    fabric: FabricClient | None = None,
    pool: PoolClient | None = None,
) -> Callable[[grpc.aio.Server, Any], Any]:
    """The ServiceHost factory of a worker: real peers (gRPC fabric and pool, scaled clock) unless
    fakes are given (service tests)."""

    def build(server: grpc.aio.Server, drain: Any) -> Any:
        from supernode.runtime.pool_clients import PoolClients  # several pool services; imports this module

        service = service_cls(
            settings,
            clock or ScaledClock(settings.runtime.time_scale),
            fabric or GrpcFabricClient(settings),
            pool or PoolClients(settings),
            drain,
        )
        add_servicer(service, server)
        return service

    return build
