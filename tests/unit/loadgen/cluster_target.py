"""The load generator's runs against the in-process cluster (the real router, prefill and decode
engines) on a virtual-time loop: the runner's clock is the loop's, so emulated time is the test's time
and a run takes milliseconds of host time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TypeVar

import pytest

from supernode.inproc import ClusterShape, InprocCluster
from supernode.loadgen import runner
from supernode.runtime.config import Settings
from supernode.sim.loop import LoopClock, run_virtual
from supernode.sim.target import InprocTarget

T = TypeVar("T")
SHAPE = ClusterShape(
    num_prefill=1, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**11, num_nodes=2
)


def run_on_cluster(
    monkeypatch: pytest.MonkeyPatch, body: Callable[[InprocTarget], Awaitable[T]],
    target_cls: type[InprocTarget] = InprocTarget,
) -> T:  # fmt: skip
    """Runs `body(target)` with an entered target over a fresh in-process cluster on virtual time."""

    async def main() -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        monkeypatch.setattr(runner, "time", SimpleNamespace(perf_counter=loop.time))
        async with target_cls(InprocCluster(Settings(), LoopClock(loop), SHAPE)) as target:
            return await body(target)

    return run_virtual(main())
