"""The fabric service in-process: leases, transfers, errors."""

from __future__ import annotations

import grpc
import pytest

from supernode.fabric.service import build
from supernode.runtime.channels import open_channel
from supernode.v1 import fabric_pb2, fabric_pb2_grpc
from tests.conftest import make_settings

DIE, CPU = fabric_pb2.ENDPOINT_KIND_DIE, fabric_pb2.ENDPOINT_KIND_CPU


@pytest.fixture
async def fabric(host_factory):
    settings = make_settings(runtime={"time_scale": 1000.0}, fabric={"lease_ttl_s": 0.5, "metrics_port": 0})
    host = await host_factory(settings, build(settings))
    channel = open_channel(host.address, settings)
    yield fabric_pb2_grpc.FabricStub(channel), host
    await channel.close()


async def test_lease_renew_release(fabric):
    stub, _ = fabric
    a = await stub.Lease(fabric_pb2.LeaseRequest(worker_id="p0", role="prefill", num_dies=32))
    b = await stub.Lease(fabric_pb2.LeaseRequest(worker_id="d0", role="decode", num_dies=4))
    assert [d.index for d in a.dies] == list(range(32))
    assert [d.index for d in b.dies] == [32, 33, 34, 35]
    assert (b.dies[0].node, b.dies[0].npu, b.dies[0].die) == (2, 0, 0)
    again = await stub.Lease(fabric_pb2.LeaseRequest(worker_id="p0", role="prefill", num_dies=32))
    assert [d.index for d in again.dies] == list(range(32)), "leasing is idempotent per worker"
    assert (await stub.Renew(fabric_pb2.RenewRequest(worker_id="p0"))).num_dies == 32
    assert (await stub.Release(fabric_pb2.ReleaseRequest(worker_id="p0"))).num_dies == 32
    described = await stub.Describe(fabric_pb2.DescribeRequest())
    assert described.num_free_dies == 768 - 4
    assert [lease.worker_id for lease in described.leases] == ["d0"]


async def test_expired_lease_returns_dies(fabric):
    import asyncio

    stub, _ = fabric
    await stub.Lease(fabric_pb2.LeaseRequest(worker_id="gone", role="decode", num_dies=8))
    await asyncio.sleep(1.2)  # ttl 0.5 s without a Renew
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Renew(fabric_pb2.RenewRequest(worker_id="gone"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "worker_id" in err.value.details()
    assert (await stub.Describe(fabric_pb2.DescribeRequest())).num_free_dies == 768


async def test_lease_errors_name_the_field(fabric):
    stub, _ = fabric
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Lease(fabric_pb2.LeaseRequest(worker_id="x", role="decode", num_dies=0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "num_dies" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Lease(fabric_pb2.LeaseRequest(worker_id="x", role="chef", num_dies=1))
    assert "role" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Lease(fabric_pb2.LeaseRequest(worker_id="big", role="decode", num_dies=769))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _transfer(src, dst, num_bytes, plane):
    return fabric_pb2.TransferRequest(
        src=fabric_pb2.Endpoint(kind=src[0], index=src[1]),
        dst=fabric_pb2.Endpoint(kind=dst[0], index=dst[1]),
        num_bytes=num_bytes,
        plane=plane,
    )


async def test_transfer_times_follow_link_figures(fabric):
    stub, _ = fabric
    gb = 10**9
    intra = await stub.Transfer(_transfer((DIE, 0), (DIE, 2), gb, fabric_pb2.PLANE_UB))
    inter = await stub.Transfer(_transfer((DIE, 0), (DIE, 16), gb, fabric_pb2.PLANE_UB))
    rdma = await stub.Transfer(_transfer((DIE, 0), (DIE, 16), gb, fabric_pb2.PLANE_RDMA))
    for reply in (intra, inter, rdma):
        assert reply.finish_s > reply.start_s
    took = lambda r: r.finish_s - r.start_s  # noqa: E731
    assert took(intra) < took(inter) < took(rdma), "UB intra-node < inter-node < RDMA for 1 GB"
    # 1 GB over RDMA at 200 Gbit/s is 40 ms (reference 1.1).
    assert took(rdma) == pytest.approx(0.040, rel=0.05)


async def test_transfer_rejects_bad_endpoints(fabric):
    stub, _ = fabric
    cases = [
        (_transfer((DIE, 0), (DIE, 9999), 1, fabric_pb2.PLANE_UB), "dst.index"),
        (_transfer((0, 0), (DIE, 1), 1, fabric_pb2.PLANE_UB), "src.kind"),
        (_transfer((DIE, 0), (DIE, 1), 1, fabric_pb2.PLANE_UNSPECIFIED), "plane"),
        (_transfer((CPU, 0), (DIE, 1), 1, fabric_pb2.PLANE_RDMA), "plane"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Transfer(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    # The service is still fine.
    ok = await stub.Transfer(_transfer((CPU, 0), (DIE, 1), 1024, fabric_pb2.PLANE_UB))
    assert ok.finish_s >= ok.start_s
