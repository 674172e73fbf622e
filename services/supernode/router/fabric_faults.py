"""Which workers sit behind a downed fabric link, asked of the fabric service (`Fabric.Describe`):
the gRPC `FaultSource` the live router plugs in (the in-process fabric answers the same itself)."""

from __future__ import annotations

import grpc

from supernode.core import policy
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.runtime.errors import from_rpc_error
from supernode.v1 import fabric_pb2, fabric_pb2_grpc


class GrpcFabricFaults:
    def __init__(self, settings: Settings) -> None:
        self._channel = open_channel(settings.fabric.address, settings)
        self._stub = fabric_pb2_grpc.FabricStub(self._channel)
        self._timeout = settings.router.call_timeout_s

    async def workers_behind_faults(self) -> frozenset[str]:
        try:
            reply = await self._stub.Describe(fabric_pb2.DescribeRequest(), timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return policy.instances_behind_faults(reply.faults, reply.leases)

    async def close(self) -> None:
        await self._channel.close()
