"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from supernode.inproc import InprocFabric
from supernode.kvpool.local import LocalPool
from supernode.prefill.service import build
from supernode.runtime.channels import open_channel
from supernode.runtime.clock import VirtualClock
from supernode.v1 import prefill_pb2_grpc
from tests.conftest import make_settings


@pytest.fixture
async def prefill_stack(host_factory: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """Starts prefill services (real gRPC over loopback) on a virtual clock, an in-process fabric and
    a local pool: `await start(xl3m=None, **prefill)` -> (stub, engine, fabric, pool)."""
    channels, fabrics = [], []

    async def start(xl3m: dict[str, Any] | None = None, **prefill: Any) -> tuple[Any, Any, Any, Any]:
        settings = make_settings(prefill={"metrics_port": 0, **prefill}, xl3m=xl3m or {})
        clock = VirtualClock(start=10.0)
        fabric, pool = InprocFabric(clock), LocalPool()
        fabric.start()
        fabrics.append(fabric)
        host = await host_factory(settings, build(settings, clock, fabric, pool))
        channel = open_channel(host.address, settings)
        channels.append(channel)
        return prefill_pb2_grpc.PrefillStub(channel), host.service.engine, fabric, pool

    yield start
    for channel in channels:
        await channel.close()
    for fabric in fabrics:
        await fabric.stop()
