"""A second service on a port already taken fails to start instead of sharing it.

gRPC sets SO_REUSEPORT by default on Linux: a second server on the same port would bind too and the
kernel would hand it half the connections, so a client of one service could reach another and get
UNIMPLEMENTED. The launcher's free ports are distinct within a stack for the same reason.
"""

from __future__ import annotations

import pytest

from supernode.launcher import LocalStack, StackConfig
from supernode.processes import free_ports
from supernode.runtime.server import ServiceHost
from tests.conftest import free_port, make_settings
from tests.service.test_router import Fake


async def test_a_second_service_on_a_taken_port_fails_to_start() -> None:
    port = free_port()
    first = ServiceHost(make_settings(), lambda server, drain: Fake(None, None), port)
    await first.start()
    try:
        with pytest.raises(RuntimeError, match=f"could not bind .*:{port}"):
            ServiceHost(make_settings(), lambda server, drain: Fake(None, None), port)
    finally:
        await first.drain_and_stop()


def test_free_ports_are_distinct() -> None:
    assert len(set(free_ports(64))) == 64


def test_a_stack_s_ephemeral_ports_are_distinct(tmp_path) -> None:
    stack = LocalStack(StackConfig(num_prefill=4, num_decode=4, num_kvpool=3, with_frontend=True,
                                   ephemeral_ports=True, log_dir=tmp_path))  # fmt: skip
    assert len(set(stack.ports.values())) == len(stack.ports) == 15


def test_a_local_cluster_keeps_off_the_ports_it_is_told_to_avoid(monkeypatch) -> None:
    from supernode.kvpool import local_cluster

    offered = iter([20001, 20002, 20003, 20004])  # 20001's bus is 30001, which the caller has planned
    monkeypatch.setattr(local_cluster, "free_cluster_port", lambda: next(offered))
    assert local_cluster._distinct_ports(2, avoid={30001, 20002}) == [20003, 20004]
