"""The fabric service: the emulated CloudMatrix384 hardware (topology, die leases, transfers).

A worker's life here: `Lease` dies by role and count at start-up, `Renew` them on a heartbeat, and
`Release` them on exit; a worker that stops renewing loses its dies after the lease TTL. A transfer's
life: `Transfer` validates the endpoints, prices the move on its plane, waits on the clock until the
emulated finish time and answers with start and finish times.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from supernode.fabric.leases import DIES_PER_NPU, NPUS_PER_NODE, LeaseTable, die_coordinates
from supernode.fabric.links import CPUS_PER_NODE, path_figures, transfer_seconds
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.errors import ResourceExhaustedError, invalid
from supernode.runtime.server import Drain, unary
from supernode.v1 import common_pb2, fabric_pb2, fabric_pb2_grpc

log = logging.getLogger(__name__)
NUM_NODES = 48  # reference 1.2: 48 nodes in a CloudMatrix384
_PLANES = {fabric_pb2.PLANE_UB: "ub", fabric_pb2.PLANE_RDMA: "rdma", fabric_pb2.PLANE_VPC: "vpc"}


def die_message(index: int) -> common_pb2.Die:
    node, npu, die = die_coordinates(index)
    return common_pb2.Die(index=index, node=node, npu=npu, die=die)


class FabricService(fabric_pb2_grpc.FabricServicer):
    service_names = (fabric_pb2.DESCRIPTOR.services_by_name["Fabric"].full_name,)

    def __init__(self, settings: Settings, clock: Clock, drain: Drain, num_nodes: int = NUM_NODES) -> None:
        self.settings = settings
        self.clock = clock
        self.drain = drain
        self.num_nodes = num_nodes
        self.leases = LeaseTable(num_nodes, settings.fabric.lease_ttl_s)
        self.num_inflight_transfers = 0
        self._expiry_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._expiry_task = asyncio.create_task(self._expire_loop())

    async def stop(self) -> None:
        if self._expiry_task:
            self._expiry_task.cancel()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.leases.ttl_s / 4))
            for worker_id in self.leases.expire():
                log.warning("lease of %s expired; its dies are free again", worker_id)

    @unary()
    async def Lease(self, request: fabric_pb2.LeaseRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        lease = self.leases.lease(request.worker_id, request.role, request.num_dies)
        log.info("leased %d dies to %s (%s)", len(lease.dies), request.worker_id, request.role)
        return fabric_pb2.LeaseResponse(
            dies=[die_message(d) for d in lease.dies], lease_ttl_s=self.leases.ttl_s
        )

    @unary(track=False)
    async def Renew(self, request: fabric_pb2.RenewRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return fabric_pb2.RenewResponse(num_dies=self.leases.renew(request.worker_id))

    @unary(track=False)
    async def Release(self, request: fabric_pb2.ReleaseRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        num = self.leases.release(request.worker_id)
        if num:
            log.info("released %d dies of %s", num, request.worker_id)
        return fabric_pb2.ReleaseResponse(num_dies=num)

    @unary()
    async def Transfer(self, request: fabric_pb2.TransferRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        plane = _PLANES.get(request.plane)
        if plane is None:
            raise invalid("plane", "must be PLANE_UB, PLANE_RDMA or PLANE_VPC")
        src = self._endpoint(request.src, "src")
        dst = self._endpoint(request.dst, "dst")
        if plane == "rdma" and (src[0] != "die" or dst[0] != "die"):
            raise invalid("plane", "RDMA connects NPU dies only")
        if self.num_inflight_transfers >= self.settings.fabric.max_inflight_transfers:
            raise ResourceExhaustedError("too many transfers in flight", retry_after_s=0.1)
        figures = path_figures(plane, src, dst)
        start = self.clock.now()
        finish = start + transfer_seconds(figures, request.num_bytes)
        self.num_inflight_transfers += 1
        try:
            await self.clock.sleep_until(finish)
        finally:
            self.num_inflight_transfers -= 1
        return fabric_pb2.TransferResponse(
            start_s=start,
            finish_s=finish,
            bandwidth_bytes_per_s=figures.bandwidth_bytes_per_s,
            latency_s=figures.latency_s,
        )

    @unary(track=False)
    async def Describe(self, request: fabric_pb2.DescribeRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        self.leases.expire()
        import time

        now = time.monotonic()
        return fabric_pb2.DescribeResponse(
            num_nodes=self.num_nodes,
            npus_per_node=NPUS_PER_NODE,
            dies_per_npu=DIES_PER_NPU,
            num_free_dies=self.leases.num_free,
            leases=[
                fabric_pb2.WorkerLease(
                    worker_id=lease.worker_id,
                    role=lease.role,
                    dies=lease.dies,
                    expires_in_s=max(0.0, lease.expires_at - now),
                )
                for lease in self.leases.leases.values()
            ],
        )

    def _endpoint(self, endpoint: fabric_pb2.Endpoint, field: str) -> tuple[str, int]:
        if endpoint.kind == fabric_pb2.ENDPOINT_KIND_DIE:
            limit, kind = self.leases.num_dies, "die"
        elif endpoint.kind == fabric_pb2.ENDPOINT_KIND_CPU:
            limit, kind = self.num_nodes * CPUS_PER_NODE, "cpu"
        else:
            raise invalid(f"{field}.kind", "must be ENDPOINT_KIND_DIE or ENDPOINT_KIND_CPU")
        if endpoint.index >= limit:
            raise invalid(f"{field}.index", f"must be < {limit} for a {kind}")
        return kind, endpoint.index


def build(settings: Settings, clock: Clock | None = None):  # type: ignore[no-untyped-def]
    def _build(server: grpc.aio.Server, drain: Drain) -> FabricService:
        service = FabricService(settings, clock or ScaledClock(settings.runtime.time_scale), drain)
        fabric_pb2_grpc.add_FabricServicer_to_server(service, server)
        return service

    return _build
