"""Fabric requests -> core objects: endpoints and planes to routes, fault targets to link ids.

Every refusal is an INVALID_ARGUMENT naming the request field (with its position in a batch).
"""

from __future__ import annotations

import math

from supernode.core.topology import Endpoint, EndpointKind, Op, Plane, Route, RouteError, Topology
from supernode.runtime.errors import invalid
from supernode.v1 import fabric_pb2

MAX_TRANSFERS_PER_CALL = 4096  # bound on one TransferMany
MAX_FAULT_S = 7 * 24 * 3600.0  # longest fault window (emulated s): a week

_PLANES = {fabric_pb2.PLANE_UB: Plane.UB, fabric_pb2.PLANE_RDMA: Plane.RDMA, fabric_pb2.PLANE_VPC: Plane.VPC}
_KINDS: dict[int, EndpointKind] = {fabric_pb2.ENDPOINT_KIND_DIE: "die", fabric_pb2.ENDPOINT_KIND_CPU: "cpu"}
_OPS: dict[int, Op | None] = {
    fabric_pb2.TRANSFER_OP_UNSPECIFIED: None,
    fabric_pb2.TRANSFER_OP_READ: Op.READ,
    fabric_pb2.TRANSFER_OP_WRITE: Op.WRITE,
}


def routed(topology: Topology, request: fabric_pb2.TransferRequest, prefix: str = "") -> tuple[Route, int]:
    """The route and byte count of one transfer; `prefix` locates it in a batch, e.g. "transfers[3]."."""
    plane = _PLANES.get(request.plane)
    if plane is None:
        raise invalid(f"{prefix}plane", "must be PLANE_UB, PLANE_RDMA or PLANE_VPC")
    if request.op not in _OPS:
        raise invalid(f"{prefix}op", "must be a TransferOp")
    src = _endpoint(request.src, f"{prefix}src")
    dst = _endpoint(request.dst, f"{prefix}dst")
    try:
        route = topology.route(src, dst, plane, _OPS[request.op])
    except RouteError as err:
        raise invalid(f"{prefix}{err.field}", str(err)) from None
    return route, request.num_bytes


def _endpoint(endpoint: fabric_pb2.Endpoint, field: str) -> Endpoint:
    kind = _KINDS.get(endpoint.kind)
    if kind is None:
        raise invalid(f"{field}.kind", "must be ENDPOINT_KIND_DIE or ENDPOINT_KIND_CPU")
    return Endpoint(kind, endpoint.index)


def fault_links(topology: Topology, request: fabric_pb2.InjectFaultRequest) -> tuple[str, ...]:
    """The links an InjectFault targets: one link by id, or every link of a node."""
    target = request.WhichOneof("target")
    if target == "link_id":
        if request.link_id not in topology.links:
            raise invalid("link_id", f"unknown link {request.link_id!r} (e.g. 'ub/die0/tx', 'ub/node0/up')")
        return (request.link_id,)
    if target == "node":
        if request.node >= topology.num_nodes:
            raise invalid("node", f"must be < {topology.num_nodes}")
        return topology.links_of_node(request.node)
    raise invalid("target", "set link_id or node")


def fault_window(request: fabric_pb2.InjectFaultRequest) -> tuple[float, float]:
    """(bandwidth factor 0..1, duration in emulated s) of an InjectFault."""
    factor, duration_s = request.bandwidth_factor, request.duration_s
    if not (0.0 <= factor <= 1.0):
        raise invalid("bandwidth_factor", "must be in 0..1 (0 = down)")
    if not (0.0 < duration_s <= MAX_FAULT_S and math.isfinite(duration_s)):
        raise invalid("duration_s", f"must be in (0, {MAX_FAULT_S:g}] emulated seconds")
    return factor, duration_s
