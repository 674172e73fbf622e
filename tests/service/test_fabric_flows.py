"""The fabric service with link sharing: concurrent transfers, batches, faults, cancellation, metrics."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import generate_latest

from supernode.fabric.service import FabricService, build
from supernode.runtime.channels import open_channel
from supernode.runtime.clock import Clock, VirtualClock
from supernode.v1 import fabric_pb2, fabric_pb2_grpc
from tests.conftest import make_settings

DIE, CPU = fabric_pb2.ENDPOINT_KIND_DIE, fabric_pb2.ENDPOINT_KIND_CPU
UB, RDMA = fabric_pb2.PLANE_UB, fabric_pb2.PLANE_RDMA
GB = 10**9


async def _start(host_factory, time_scale: float, clock: Clock | None = None):
    settings = make_settings(
        runtime={"time_scale": time_scale}, fabric={"lease_ttl_s": 0.5, "metrics_port": 0}
    )
    host = await host_factory(settings, build(settings, clock))
    channel = open_channel(host.address, settings)
    return fabric_pb2_grpc.FabricStub(channel), host.service, channel


@pytest.fixture
async def fabric(host_factory):
    """Emulated time 1000x faster than wall time: a 40 s RDMA transfer takes 40 ms."""
    stub, service, channel = await _start(host_factory, 1000.0)
    yield stub, service
    await channel.close()


def transfer(src, dst, num_bytes, plane=UB, op=fabric_pb2.TRANSFER_OP_UNSPECIFIED):
    return fabric_pb2.TransferRequest(
        src=fabric_pb2.Endpoint(kind=src[0], index=src[1]),
        dst=fabric_pb2.Endpoint(kind=dst[0], index=dst[1]),
        num_bytes=num_bytes,
        plane=plane,
        op=op,
    )


def took(reply) -> float:
    return reply.finish_s - reply.start_s


async def test_batched_transfers_sharing_a_die_port_split_it(fabric):
    stub, _ = fabric
    reply = await stub.TransferMany(
        fabric_pb2.TransferManyRequest(
            transfers=[
                transfer((DIE, 0), (DIE, 2), GB),
                transfer((DIE, 0), (DIE, 4), GB),
                transfer((DIE, 6), (DIE, 8), GB),
            ]
        )
    )
    shared, _, alone = reply.transfers
    assert shared.start_s == alone.start_s
    assert shared.bandwidth_bytes_per_s == pytest.approx(98e9)  # 196 GB/s port / 2
    assert alone.bandwidth_bytes_per_s == pytest.approx(167e9)  # measured intra-node read (ref 1.3)
    assert took(shared) == pytest.approx(GB / 98e9 + 1.2e-6, rel=1e-3)  # epoch times resolve ~10 us


async def test_write_and_cpu_paths_follow_the_measured_table(fabric):
    stub, _ = fabric
    reply = await stub.TransferMany(
        fabric_pb2.TransferManyRequest(
            transfers=[
                transfer((DIE, 0), (DIE, 40), GB, op=fabric_pb2.TRANSFER_OP_WRITE),  # inter-node write
                transfer((CPU, 8), (DIE, 2), GB),  # EMS load from another node's DRAM: a read
            ]
        )
    )
    write, load = reply.transfers
    assert write.bandwidth_bytes_per_s == pytest.approx(135e9) and write.latency_s == pytest.approx(2.1e-6)
    assert load.bandwidth_bytes_per_s == pytest.approx(147e9) and load.latency_s == pytest.approx(1.7e-6)


async def test_concurrent_transfers_slow_each_other(host_factory):
    stub, _, channel = await _start(host_factory, 0.05)  # 100 MB at 12.5 GB/s = 8 ms emulated, 160 ms wall
    request = transfer((DIE, 0), (DIE, 40), 100 * 10**6, RDMA)
    alone = await stub.Transfer(request)
    both = await asyncio.gather(stub.Transfer(request), stub.Transfer(request))
    await channel.close()
    assert took(alone) == pytest.approx(100e6 / 25e9, rel=0.01)
    for reply in both:  # started within a few wall ms (~0.1 ms emulated) of each other
        assert took(reply) == pytest.approx(2 * took(alone), rel=0.1)


async def test_batch_errors_name_the_transfer(fabric):
    stub, _ = fabric
    batch = [transfer((DIE, 0), (DIE, 2), 1), transfer((DIE, 0), (DIE, 9999), 1)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.TransferMany(fabric_pb2.TransferManyRequest(transfers=batch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "transfers[1].dst.index" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.TransferMany(fabric_pb2.TransferManyRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_node_down_fails_transfers_in_flight_and_refuses_new_ones(fabric):
    stub, service = fabric
    # 40,000 s emulated (40 s of wall time): still in flight when the fault comes, however slow the host
    long = asyncio.ensure_future(stub.Transfer(transfer((DIE, 0), (DIE, 40), 10**15, RDMA)))
    for _ in range(1000):
        if service.network.num_inflight:
            break
        await asyncio.sleep(0.001)
    fault = await stub.InjectFault(
        fabric_pb2.InjectFaultRequest(node=0, bandwidth_factor=0.0, duration_s=600.0)
    )
    assert fault.num_failed_transfers == 1 and "ub/node0/up" in fault.fault.link_ids
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await long
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "went down" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Transfer(transfer((DIE, 2), (DIE, 40), GB))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "ub/die2/tx" in err.value.details()
    described = await stub.Describe(fabric_pb2.DescribeRequest())
    assert [f.fault_id for f in described.faults] == [fault.fault.fault_id]
    assert (await stub.ClearFaults(fabric_pb2.ClearFaultsRequest())).num_cleared == 1
    assert (await stub.Transfer(transfer((DIE, 2), (DIE, 40), GB))).finish_s > 0


async def test_faults_end_by_themselves(host_factory):
    clock = VirtualClock()
    stub, _, channel = await _start(host_factory, 1000.0, clock)
    down = fabric_pb2.InjectFaultRequest(link_id="ub/die0/tx", bandwidth_factor=0.0, duration_s=5.0)
    with clock.held():  # emulated time moves only by hand in here
        fault = (await stub.InjectFault(down)).fault
        clock.advance(4.9)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # (admitted, it would wait for the clock)
            await stub.Transfer(transfer((DIE, 0), (DIE, 2), GB), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, "down until its duration has passed"
        clock.advance(0.2)  # past its end: nobody cleared it
    reply = await stub.Transfer(transfer((DIE, 0), (DIE, 2), GB))
    assert reply.start_s >= fault.end_s and reply.finish_s > reply.start_s
    assert not (await stub.Describe(fabric_pb2.DescribeRequest())).faults
    await channel.close()


async def test_degraded_link_slows_transfers(fabric):
    stub, _ = fabric
    request = fabric_pb2.InjectFaultRequest(link_id="ub/die0/tx", bandwidth_factor=0.25, duration_s=60.0)
    await stub.InjectFault(request)
    reply = await stub.TransferMany(
        fabric_pb2.TransferManyRequest(transfers=[transfer((DIE, 0), (DIE, 2), GB)])
    )
    assert reply.transfers[0].bandwidth_bytes_per_s == pytest.approx(49e9)  # 196 GB/s x 0.25


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"link_id": "nope", "bandwidth_factor": 0.5, "duration_s": 1.0}, "link_id"),
        ({"node": 48, "bandwidth_factor": 0.5, "duration_s": 1.0}, "node"),
        ({"bandwidth_factor": 0.5, "duration_s": 1.0}, "target"),
        ({"node": 0, "bandwidth_factor": 1.5, "duration_s": 1.0}, "bandwidth_factor"),
        ({"node": 0, "bandwidth_factor": 0.5, "duration_s": 0.0}, "duration_s"),
    ],
)
async def test_bad_faults_name_the_field(fabric, request_kwargs, field):
    stub, _ = fabric
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.InjectFault(fabric_pb2.InjectFaultRequest(**request_kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


async def until(predicate, what: str) -> None:  # noqa: ANN001
    for _ in range(1000):  # a guard against a hang (5 s), well short of the long transfers' own end
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


async def test_a_cancelled_transfer_leaves_the_links(fabric):
    stub, service = fabric
    flows = service.network.flows
    # 40,000 s emulated, 40 s of wall time: only the cancellation can take it off the links in time
    call = stub.Transfer(transfer((DIE, 0), (DIE, 40), 10**15, RDMA))
    await until(lambda: flows.num_flows == 1, "the transfer started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await until(lambda: flows.num_flows == 0, "the cancelled transfer still holds its links")
    assert service.network.num_inflight == 0


async def test_metrics_count_link_and_plane_bytes(fabric):
    stub, service = fabric
    await stub.Lease(fabric_pb2.LeaseRequest(worker_id="d0", role="decode", num_dies=4))
    await stub.Transfer(transfer((DIE, 0), (DIE, 40), GB))
    assert isinstance(service, FabricService)
    service.publish()
    text = generate_latest(service.metrics.registry).decode()
    assert 'supernode_fabric_link_bytes_total{link="ub/die0/tx",plane="ub"} 1e+09' in text
    assert 'supernode_fabric_link_bytes_total{link="ub/node0/up",plane="ub"} 1e+09' in text
    assert 'supernode_fabric_plane_bytes_total{plane="ub"} 4e+09' in text  # 4 links crossed
    assert 'supernode_fabric_transfers_total{plane="ub"} 1.0' in text
    assert "supernode_fabric_dies_leased 4.0" in text
    assert 'link="ub/die5/tx"' not in text  # idle links stay out
