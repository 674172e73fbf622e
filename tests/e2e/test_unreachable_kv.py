"""KV that cannot be pulled, on a live stack (every service a process, real Redis): a prefill
instance's dies compute but cannot send, and the router, which has not heard of the fault, keeps
sending it prompts. Decode says the KV is unreachable, and the router recomputes each such prompt on
the other prefill instance instead of moving the request between decode instances until it fails."""

from __future__ import annotations

import pytest

from supernode.core import tokens, topology
from supernode.launcher import LocalStack
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.sdk import AsyncClient
from supernode.v1 import fabric_pb2, fabric_pb2_grpc

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Two prefill instances and one decode (conftest's stack); the router asks the fabric for faults
    only at its start, so it keeps choosing prefill-0."""
    return {"SUPERNODE_ROUTER__FAULT_POLL_S": "100000", "SUPERNODE_ROUTER__POLICY": "round_robin"}


def _prompt(i: int) -> list[int]:
    return [2000 + 31 * i + (k * 17) % 199 for k in range(400)]


async def test_kv_on_dies_that_cannot_send_is_recomputed_on_the_other_prefill(stack: LocalStack):
    async with open_channel(stack.address("fabric"), Settings()) as channel:
        fabric = fabric_pb2_grpc.FabricStub(channel)
        reply = await fabric.Describe(fabric_pb2.DescribeRequest(), timeout=5)
        (lease,) = [lease for lease in reply.leases if lease.worker_id == "prefill-0"]
        for die in lease.dies:
            fault = fabric_pb2.InjectFaultRequest(
                link_id=topology.rdma_port(die, "tx"), bandwidth_factor=0.0, duration_s=600
            )
            await fabric.InjectFault(fault, timeout=5)
        try:
            async with AsyncClient(stack.router_address, timeout_s=60) as client:
                done = [await client.complete(token_ids=_prompt(i), max_tokens=6, seed=i) for i in range(4)]
        finally:
            await fabric.ClearFaults(fabric_pb2.ClearFaultsRequest(), timeout=5)
    for i, c in enumerate(done):
        assert c.token_ids == tokens.TokenModel(_prompt(i), i).generate(6), f"request {i}: its tokens"
        assert c.stats.num_migrations == 0, "not moved between decode instances"
    prefill_0 = stack.address("prefill-0")
    assert any(c.stats.prefill_worker == prefill_0 for c in done), "round robin sent prefill-0 some"
    assert "lost before decode (kv: unreachable" in stack.tail("router", 400), "and they were recomputed"
