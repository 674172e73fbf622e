"""`supernode fabric ...`: look at the running fabric (leases, busiest links, faults) and inject faults."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from supernode.runtime.channels import open_channel
from supernode.runtime.config import get_settings
from supernode.runtime.errors import SupernodeError, from_rpc_error
from supernode.v1 import fabric_pb2, fabric_pb2_grpc

Opt = typer.Option
console = Console()


def _call(method: str, request: object, address: str | None) -> Any:
    """The reply of the Fabric RPC `method` (Any: the generated gRPC stub is untyped; callers name
    the reply's message type)."""
    settings = get_settings()

    async def run() -> Any:
        async with open_channel(address or settings.fabric.address, settings) as channel:
            stub = fabric_pb2_grpc.FabricStub(channel)
            try:
                return await getattr(stub, method)(request, timeout=settings.runtime.rpc_timeout_s)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from err

    try:
        return asyncio.run(run())
    except SupernodeError as err:
        console.print(f"[red]{err.code}[/]: {err.message}")
        raise typer.Exit(1) from err


def _gb(value: float) -> str:
    return f"{value / 1e9:,.1f}"


def show(reply: fabric_pb2.DescribeResponse) -> None:
    console.print(
        f"fabric: {reply.num_nodes} nodes x {reply.npus_per_node} NPUs x {reply.dies_per_npu} dies, "
        f"{reply.num_links} links; {reply.num_free_dies} dies free"
    )
    leases = Table(title="leases")
    for col in ("worker", "role", "dies", "first..last", "expires in (s)"):
        leases.add_column(col)
    for lease in reply.leases:
        span = f"{lease.dies[0]}..{lease.dies[-1]}" if lease.dies else "-"
        leases.add_row(lease.worker_id, lease.role, str(len(lease.dies)), span, f"{lease.expires_in_s:.1f}")
    console.print(leases)
    links = Table(title="busiest links (by bytes carried)")
    for col in ("link", "MB carried", "capacity GB/s", "utilisation now", "flows", "down"):
        links.add_column(col, justify="right" if col != "link" else "left")
    for link in reply.busiest_links:
        links.add_row(
            link.link_id,
            f"{link.bytes_total / 1e6:,.1f}",
            _gb(link.capacity_bytes_per_s),
            f"{link.utilisation:.0%}",
            str(link.num_flows),
            "DOWN" if link.is_down else "",
        )
    console.print(links)
    for fault in reply.faults:
        console.print(
            f"fault {fault.fault_id}: {len(fault.link_ids)} links at {fault.bandwidth_factor:.0%} "
            f"until emulated t={fault.end_s:.3f}"
        )


def register(app: typer.Typer) -> None:
    fabric = typer.Typer(help="Look at the emulated UB fabric and inject faults.", no_args_is_help=True)
    app.add_typer(fabric, name="fabric")

    @fabric.command("status")
    def status(
        links: Annotated[int, Opt(min=0, max=1000, help="Busiest links to list")] = 15,
        address: Annotated[str | None, Opt(help="Fabric address (default from settings)")] = None,
    ) -> None:
        """Current leases, the links that carried the most bytes, active faults."""
        reply: fabric_pb2.DescribeResponse = _call(
            "Describe", fabric_pb2.DescribeRequest(num_busiest_links=links), address
        )
        show(reply)

    @fabric.command("fault")
    def fault(
        node: Annotated[int | None, Opt(help="Every link of this node")] = None,
        link: Annotated[str | None, Opt(help="One link id, e.g. ub/die17/tx")] = None,
        factor: Annotated[float, Opt(min=0.0, max=1.0, help="Capacity kept (0 = down)")] = 0.0,
        duration_s: Annotated[float, Opt(min=0.0, help="Emulated seconds the fault lasts")] = 10.0,
        address: Annotated[str | None, Opt(help="Fabric address (default from settings)")] = None,
    ) -> None:
        """Degrade a link or a node's links, or take them down, for a window of emulated time."""
        if (node is None) == (link is None):
            raise typer.BadParameter("give exactly one of --node or --link", param_hint="--node/--link")
        request = fabric_pb2.InjectFaultRequest(bandwidth_factor=factor, duration_s=duration_s)
        if node is not None:
            request.node = node
        else:
            request.link_id = link or ""
        reply: fabric_pb2.InjectFaultResponse = _call("InjectFault", request, address)
        console.print(
            f"fault {reply.fault.fault_id}: {len(reply.fault.link_ids)} links at {factor:.0%} for "
            f"{duration_s:g} s; {reply.num_failed_transfers} transfers in flight failed"
        )

    @fabric.command("clear")
    def clear(address: Annotated[str | None, Opt(help="Fabric address")] = None) -> None:
        """End every active fault now."""
        reply: fabric_pb2.ClearFaultsResponse = _call("ClearFaults", fabric_pb2.ClearFaultsRequest(), address)
        console.print(f"cleared {reply.num_cleared} faults")
