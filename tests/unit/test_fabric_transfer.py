"""The fabric engine's single-transfer call against its batched one, on virtual time."""

from __future__ import annotations

import asyncio

import pytest

from supernode.core.topology import Endpoint, Plane, Topology
from supernode.fabric.network import FabricNetwork
from supernode.runtime.errors import UnavailableError
from supernode.sim.loop import LoopClock, run_virtual

GB = 10**9


def _network() -> FabricNetwork:
    network = FabricNetwork(Topology(4), LoopClock(asyncio.get_running_loop()))
    network.start()
    return network


def _route(topology: Topology, src: int, dst: int):
    return topology.route(Endpoint("die", src), Endpoint("die", dst), Plane.RDMA)


def test_one_transfer_ends_as_a_batch_of_one_does():
    async def main() -> None:
        one, many = _network(), _network()
        lone = []
        for src, dst, size in [(0, 40, GB), (1, 41, 3 * GB), (0, 40, 0)]:
            route = _route(one.topology, src, dst)
            a, (b,) = await asyncio.gather(one.transfer(route, size), many.transfer_many([(route, size)]))
            lone.append(a.finish_s - a.start_s)
            assert (a.finish_s - a.start_s, a.num_bytes, a.bandwidth_bytes_per_s) == (
                b.finish_s - b.start_s, b.num_bytes, b.bandwidth_bytes_per_s)  # fmt: skip
        # two at once on one die's port share it, as a batch of two does
        shared = [_route(one.topology, 0, 40), _route(one.topology, 0, 41)]
        pair = await asyncio.gather(*(one.transfer(route, GB) for route in shared))
        batch = await many.transfer_many([(route, GB) for route in shared])
        # (the two networks' clocks read different instants by now, so compare to round-off)
        assert [p.finish_s - p.start_s for p in pair] == pytest.approx(
            [b.finish_s - b.start_s for b in batch], rel=1e-9
        )
        assert pair[0].finish_s - pair[0].start_s > 1.5 * lone[0]  # they did share the port
        assert one.num_inflight == many.num_inflight == 0
        await one.stop()
        await many.stop()

    run_virtual(main())


def test_a_down_path_is_refused_and_a_cancelled_transfer_frees_its_links():
    async def main() -> None:
        network = _network()
        route = _route(network.topology, 0, 40)
        network.inject([route.links[0]], 0.0, 5.0)
        with pytest.raises(UnavailableError, match="path down"):
            await network.transfer(route, GB)
        network.clear_faults()
        task = asyncio.ensure_future(network.transfer(route, 100 * GB))
        await asyncio.sleep(0.01)
        assert network.flows.num_flows == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert network.flows.num_flows == 0 and network.num_inflight == 0
        await network.stop()

    run_virtual(main())


def test_the_engine_wakes_once_per_transfer_at_its_delivery():
    async def main() -> None:
        network = _network()
        wakes: list[float] = []
        on_timer = network._on_timer

        def counted() -> None:
            wakes.append(network.now_s())
            on_timer()

        network._on_timer = counted  # type: ignore[method-assign]
        route = _route(network.topology, 0, 40)
        assert route.latency_s > 0
        outcome = await network.transfer(route, GB)
        # the end of data needs no wake-up of its own: the one at the delivery processes it first
        assert wakes == [outcome.finish_s - network.origin]
        assert network.flows.num_flows == 0 and network.num_inflight == 0
        await network.stop()

    run_virtual(main())


def test_a_background_transfer_shares_the_links_as_an_awaited_one_does():
    async def main() -> None:
        awaited, background = _network(), _network()
        route = _route(awaited.topology, 0, 40)
        both = await asyncio.gather(awaited.transfer(route, GB), awaited.transfer(route, GB))
        store = background.start_transfer(route, GB)
        other = await background.transfer(route, GB)
        assert other.finish_s - other.start_s == pytest.approx(both[1].finish_s - both[1].start_s, rel=1e-9)
        done = await store
        assert done.num_bytes == GB and done.finish_s == other.finish_s - background.origin
        # a path that is down refuses it at once, as the awaited call does
        background.inject([route.links[0]], 0.0, 5.0)
        refused = background.start_transfer(route, GB)
        assert refused.done() and isinstance(refused.exception(), UnavailableError)
        assert background.flows.num_flows == 0 and background.num_inflight == 0
        await awaited.stop()
        await background.stop()

    run_virtual(main())
