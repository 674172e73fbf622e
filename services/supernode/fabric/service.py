"""The fabric service: the emulated CloudMatrix384 hardware (topology, die leases, transfers, faults).

A worker's life here: `Lease` dies by role and count at start-up, `Renew` them on a heartbeat, and
`Release` them on exit. A worker that stops renewing loses its dies after the lease TTL (wall seconds):
a maintenance task expires leases every min(1 s, TTL / 4) and publishes the gauges.

A transfer's life (`Transfer`, or a batch with `TransferMany`): validated and routed on the topology
(INVALID_ARGUMENT naming the field), admitted as a flow at the current emulated instant
(RESOURCE_EXHAUSTED past `max_inflight_transfers`, UNAVAILABLE when a link of its path is down), shares
its links max-min fairly with every other transfer (fabric/network.py), and is answered once it has
finished in emulated time; a link going down under it fails it with UNAVAILABLE.

Faults (admin): `InjectFault` degrades a link or takes a link or a whole node down for a window of
emulated time; `ClearFaults` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc

from supernode.core.topology import DEFAULT_NUM_NODES, DIES_PER_NPU, NPUS_PER_NODE, Topology
from supernode.fabric.faults import Fault
from supernode.fabric.leases import LeaseTable, die_coordinates
from supernode.fabric.metrics import LinkCollector, plane_utilization
from supernode.fabric.network import FabricNetwork, TransferOutcome
from supernode.fabric.requests import MAX_TRANSFERS_PER_CALL, fault_links, fault_window, routed
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.errors import FailedPreconditionError, ResourceExhaustedError, invalid
from supernode.runtime.metrics import FabricMetrics, start_metrics_server
from supernode.runtime.server import Drain, unary
from supernode.v1 import common_pb2, fabric_pb2, fabric_pb2_grpc

log = logging.getLogger(__name__)
NUM_NODES = DEFAULT_NUM_NODES


def die_message(index: int) -> common_pb2.Die:
    node, npu, die = die_coordinates(index)
    return common_pb2.Die(index=index, node=node, npu=npu, die=die)


class FabricService(fabric_pb2_grpc.FabricServicer):
    service_names: tuple[str, ...] = (fabric_pb2.DESCRIPTOR.services_by_name["Fabric"].full_name,)

    def __init__(self, settings: Settings, clock: Clock, drain: Drain, num_nodes: int = NUM_NODES) -> None:
        self.settings = settings
        self.clock = clock
        self.drain = drain
        self.num_nodes = num_nodes
        self.topology = Topology(num_nodes)
        self.network = FabricNetwork(self.topology, clock, settings.runtime.time_scale)
        self.leases = LeaseTable(num_nodes, settings.fabric.lease_ttl_s)
        self.metrics = FabricMetrics()
        self.metrics.registry.register(LinkCollector(self.topology, self.network.flows))
        self._maintenance: asyncio.Task[None] | None = None

    async def start(self) -> None:
        start_metrics_server(
            self.settings.fabric.metrics_port, self.settings.runtime.bind_host, self.metrics.registry
        )
        self.network.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="fabric-maintenance")

    async def stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.network.stop()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.leases.ttl_s / 4))
            self.expire_leases()
            self.publish()

    def expire_leases(self) -> None:
        """Returns the dies of workers that stopped renewing to the pool."""
        for worker_id in self.leases.expire():
            log.warning("lease of %s expired; its dies are free again", worker_id)

    def publish(self) -> None:
        """Refreshes the leased-dies and per-plane utilisation gauges."""
        self.metrics.set_dies_leased(self.leases.num_dies - self.leases.num_free)
        self.network.settle()
        for plane, ratio in plane_utilization(self.topology, self.network.flows).items():
            self.metrics.set_utilization(plane, ratio)

    @unary()
    async def Lease(self, request: fabric_pb2.LeaseRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        lease = self.leases.lease(request.worker_id, request.role, request.num_dies)
        log.info("leased %d dies to %s (%s)", len(lease.dies), request.worker_id, request.role)
        return fabric_pb2.LeaseResponse(
            dies=[die_message(d) for d in lease.dies], lease_ttl_s=self.leases.ttl_s
        )

    @unary(track=False)
    async def Renew(self, request: fabric_pb2.RenewRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        if not request.worker_id:
            raise invalid("worker_id", "must not be empty")
        num = self.leases.renew(request.worker_id)
        if num == 0:
            raise FailedPreconditionError(
                f"worker_id: {request.worker_id!r} holds no lease (never leased, or it expired); lease again",
                field="worker_id",
            )
        return fabric_pb2.RenewResponse(num_dies=num)

    @unary(track=False)
    async def Release(self, request: fabric_pb2.ReleaseRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        if not request.worker_id:
            raise invalid("worker_id", "must not be empty")
        num = self.leases.release(request.worker_id)  # idempotent: releasing twice returns 0
        if num:
            log.info("released %d dies of %s", num, request.worker_id)
        return fabric_pb2.ReleaseResponse(num_dies=num)

    @unary()
    async def Transfer(self, request: fabric_pb2.TransferRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        (reply,) = await self._transfer([request], "")
        return reply

    @unary()
    async def TransferMany(self, request: fabric_pb2.TransferManyRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        if not 1 <= len(request.transfers) <= MAX_TRANSFERS_PER_CALL:
            raise invalid("transfers", f"must hold 1..{MAX_TRANSFERS_PER_CALL} transfers")
        return fabric_pb2.TransferManyResponse(transfers=await self._transfer(request.transfers, "transfers"))

    async def _transfer(
        self, requests: list[fabric_pb2.TransferRequest], field: str
    ) -> list[fabric_pb2.TransferResponse]:
        prefix = lambda i: f"{field}[{i}]." if field else ""  # noqa: E731
        items = [routed(self.topology, r, prefix(i)) for i, r in enumerate(requests)]
        if self.network.num_inflight + len(items) > self.settings.fabric.max_inflight_transfers:
            raise ResourceExhaustedError("too many transfers in flight", retry_after_s=0.1)
        outcomes = await self.network.transfer_many(items)
        for request, (route, _), outcome in zip(requests, items, outcomes, strict=True):
            self.metrics.on_transfer(route.plane.value, outcome.num_bytes, outcome.finish_s - outcome.start_s)
            log.debug("transfer %s %d B on %s", request.tag, outcome.num_bytes, route.plane.value)
        return [_transfer_reply(outcome) for outcome in outcomes]

    @unary(track=False)
    async def Describe(self, request: fabric_pb2.DescribeRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        self.expire_leases()
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
            num_links=len(self.topology.links),
            faults=[self._fault_message(fault) for fault in self.network.faults.active.values()],
            busiest_links=self._busiest_links(min(request.num_busiest_links, 1000)),
        )

    def _busiest_links(self, count: int) -> list[fabric_pb2.LinkLoad]:
        if count == 0:
            return []
        self.network.settle()
        stats = [(link, self.network.flows.link_stats(link)) for link in self.topology.links]
        stats.sort(key=lambda item: (item[1].bytes_total, item[1].utilisation), reverse=True)
        return [
            fabric_pb2.LinkLoad(
                link_id=link,
                capacity_bytes_per_s=st.capacity_bytes_per_s,
                utilisation=st.utilisation,
                num_flows=st.num_flows,
                bytes_total=int(st.bytes_total),
                is_down=st.is_down,
            )
            for link, st in stats[:count]
            if st.bytes_total > 0 or st.num_flows or st.is_down
        ]

    @unary()
    async def InjectFault(self, request: fabric_pb2.InjectFaultRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        link_ids = fault_links(self.topology, request)
        factor, duration_s = fault_window(request)
        fault, num_failed = self.network.inject(link_ids, factor, duration_s)
        return fabric_pb2.InjectFaultResponse(
            fault=self._fault_message(fault), num_failed_transfers=num_failed
        )

    @unary()
    async def ClearFaults(self, request: fabric_pb2.ClearFaultsRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return fabric_pb2.ClearFaultsResponse(num_cleared=self.network.clear_faults())

    def _fault_message(self, fault: Fault) -> fabric_pb2.Fault:
        origin = self.network.origin
        return fabric_pb2.Fault(
            fault_id=fault.fault_id,
            link_ids=list(fault.link_ids),
            bandwidth_factor=fault.bandwidth_factor,
            start_s=origin + fault.start_s,
            end_s=origin + fault.end_s,
        )


def _transfer_reply(outcome: TransferOutcome) -> fabric_pb2.TransferResponse:
    return fabric_pb2.TransferResponse(
        start_s=outcome.start_s,
        finish_s=outcome.finish_s,
        bandwidth_bytes_per_s=outcome.bandwidth_bytes_per_s,
        latency_s=outcome.latency_s,
    )


def build(
    settings: Settings, clock: Clock | None = None
) -> Callable[[grpc.aio.Server, Drain], FabricService]:
    def _build(server: grpc.aio.Server, drain: Drain) -> FabricService:
        service = FabricService(settings, clock or ScaledClock(settings.runtime.time_scale), drain)
        fabric_pb2_grpc.add_FabricServicer_to_server(service, server)
        return service

    return _build
