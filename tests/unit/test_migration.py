"""Request migration, liveness, health and fault-aware routing in the router engine, on the in-process
cluster (the real engines on a virtual clock) with peers that break the way processes do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence

import pytest
from prometheus_client import REGISTRY

from supernode.core import policy, tokens, topology
from supernode.core.request import KvHandle, Request, RequestStatus, Sampling
from supernode.inproc import ClusterShape, InprocCluster, LocalDecodePeer, LocalPrefillPeer
from supernode.runtime.clock import VirtualClock
from supernode.runtime.errors import UnavailableError
from supernode.runtime.peers import DecodeChunk, LoadSnapshot, PrefillResult
from tests.conftest import make_settings

SHAPE = ClusterShape(num_prefill=2, num_decode=2, prefill_npus=1, decode_dies=2, pool_bytes=10**12)
PROMPT = [300 + (i * 7) % 101 for i in range(400)]


class BreakingDecode(LocalDecodePeer):
    """A decode instance that breaks after `after` chunks: "kill" (the stream is cut, as a killed
    process's is) or "stop" (it goes silent and stops answering probes, as a SIGSTOPped one)."""

    def __init__(self, inner: LocalDecodePeer, after: int, mode: str = "kill") -> None:
        super().__init__(inner.engine)
        self.after = after
        self.mode = mode
        self.is_stopped = False
        self.num_calls = 0

    async def decode(
        self, reservation_id: str, kv: KvHandle, first_token: int, max_tokens: int, sampling: Sampling,
        num_resumed: int = 0,
    ) -> AsyncGenerator[DecodeChunk, None]:  # fmt: skip
        self.num_calls += 1
        chunks = self.engine.decode(reservation_id, kv, first_token, max_tokens, sampling, num_resumed)
        count = 0
        async for chunk in chunks:
            if count == self.after:
                await chunks.aclose()
                if self.mode == "kill":
                    err = UnavailableError("Socket closed")
                    err.from_service = False
                    raise err
                self.is_stopped = True
                await asyncio.Event().wait()
            count += 1
            yield chunk

    async def load(self) -> LoadSnapshot:
        if self.is_stopped:
            raise UnavailableError("probe: no answer")
        return self.engine.load()


class FrozenPrefill(LocalPrefillPeer):
    """A prefill instance that has frozen: calls never answer, probes fail."""

    async def prefill(
        self, request_id: str, prompt: Sequence[int], sampling: Sampling,
        on_first_token: Callable[[int, float], None] | None = None, sent_s: float = 0.0,
    ) -> PrefillResult:  # fmt: skip
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def load(self) -> LoadSnapshot:
        raise UnavailableError("probe: no answer")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _cluster(**router: object) -> InprocCluster:
    settings = make_settings(router={"liveness_s": 2.0, "load_poll_s": 0.5, **router})
    return InprocCluster(settings, VirtualClock(start=1.0), SHAPE)


async def _run(cluster: InprocCluster, request: Request) -> list[list[int]]:
    return [chunk.token_ids async for chunk in cluster.generate(request)]


async def _fault_free(max_tokens: int, sampling: Sampling) -> list[list[int]]:
    async with _cluster() as cluster:
        return await _run(cluster, cluster.router.make_request("r", "", PROMPT, max_tokens, sampling))


@pytest.mark.parametrize("after", [0, 1, 5])
async def test_a_killed_decode_stream_continues_elsewhere_with_the_same_tokens(after):
    sampling = Sampling(seed=11)
    expected = await _fault_free(64, sampling)
    moved_before = _sample("supernode_router_migrations_total", reason="unavailable")
    falls = _sample("supernode_router_instance_unhealthy_total", role="decode", address="decode-0")
    async with _cluster() as cluster:
        workers = cluster.router.workers.decode
        breaking = BreakingDecode(workers[0].peer, after)
        workers[0].peer = breaking
        workers[1].num_inflight = 1  # the fault-free choice, decode-0, is taken first
        request = cluster.router.make_request("r", "", PROMPT, 64, sampling)
        got = await _run(cluster, request)
    assert breaking.num_calls == 1
    flat = [t for chunk in got for t in chunk]
    assert flat == tokens.TokenModel(PROMPT, 11).generate(64), "no duplicate, no gap, no other token"
    assert got == expected, "even the MTP groups are those of the fault-free run"
    assert request.num_migrations == 1 and request.decode_worker == "decode-1"
    assert request.status is RequestStatus.FINISHED and request.finish_reason == "length"
    assert _sample("supernode_router_migrations_total", reason="unavailable") == moved_before + 1
    falls_after = _sample("supernode_router_instance_unhealthy_total", role="decode", address="decode-0")
    assert falls_after == falls + 1, "the broken stream marked its worker down"


async def test_a_silent_decode_is_given_up_after_the_liveness_time():
    sampling = Sampling(seed=5)
    async with _cluster(load_poll_s=60.0) as cluster:  # no probe in the window: liveness alone decides
        workers = cluster.router.workers.decode
        workers[1].num_inflight = 1
        workers[0].peer = BreakingDecode(workers[0].peer, 3, mode="stop")
        request = cluster.router.make_request("r", "", PROMPT, 48, sampling)
        started = cluster.clock.now()
        got = [t for chunk in await _run(cluster, request) for t in chunk]
        took = cluster.clock.now() - started
    assert got == tokens.TokenModel(PROMPT, 5).generate(48)
    assert request.num_migrations == 1
    assert 2.0 <= took < 5.0, "moved once the stream had been silent for liveness_s, not before"


async def test_an_end_of_sequence_plan_survives_migration():
    plan = tokens.plan_eos(PROMPT, 9, tokens.OutputLengths("fixed", 40), eos_token_id=1)
    sampling = Sampling(seed=9, ignore_eos=False, eos_token_id=1, eos_position=plan.position,
                        stop_token_ids=frozenset({1}))  # fmt: skip
    async with _cluster() as cluster:
        workers = cluster.router.workers.decode
        workers[1].num_inflight = 1
        workers[0].peer = BreakingDecode(workers[0].peer, 4)
        request = cluster.router.make_request("r", "", PROMPT, 200, sampling)
        got = [t for chunk in await _run(cluster, request) for t in chunk]
    model = tokens.TokenModel(PROMPT, 9, tokens.EosPlan(1, plan.position))
    assert got == model.generate(40) and got[-1] == 1
    assert request.finish_reason == "stop" and request.num_migrations == 1


async def test_migrations_are_bounded():
    async with _cluster(max_migrations=2) as cluster:
        peers = [BreakingDecode(w.peer, 2) for w in cluster.router.workers.decode]
        for worker, peer in zip(cluster.router.workers.decode, peers, strict=True):
            worker.peer = peer
        request = cluster.router.make_request("r", "", PROMPT, 64, Sampling(seed=1))
        with pytest.raises(UnavailableError):
            await _run(cluster, request)
        await asyncio.sleep(0)
    assert sum(p.num_calls for p in peers) == 3, "the first try and two migrations"
    assert request.num_migrations == 2 and request.status is RequestStatus.FAILED


async def test_a_frozen_prefill_is_retried_elsewhere_once_its_probe_fails():
    async with _cluster() as cluster:
        workers = cluster.router.workers.prefill
        workers[0].peer = FrozenPrefill(workers[0].peer.engine)
        workers[1].num_inflight = 5  # the frozen one is the least loaded: tried first
        request = cluster.router.make_request("r", "", PROMPT, 8, Sampling(seed=2))
        got = [t for chunk in await _run(cluster, request) for t in chunk]
        assert not workers[0].is_healthy
    assert got == tokens.TokenModel(PROMPT, 2).generate(8)
    assert request.prefill_worker == "prefill-1"


async def test_instances_behind_a_fabric_fault_are_routed_around():
    async with _cluster() as cluster:
        lease = cluster.fabric.leases.leases["decode-0"]
        # its dies' own ports (in this small shape every instance shares node 0's uplinks)
        links = [link for die in lease.dies for link in policy.links_of_die(die) if "/die" in link]
        cluster.fabric.network.inject(links, 0.0, 1000.0)
        await cluster.router.workers.poll_once()
        await cluster.router.workers.poll_faults()
        assert cluster.router.workers.decode[0].is_behind_fault
        requests = [cluster.router.make_request(f"r{i}", "", PROMPT, 4, Sampling(seed=i)) for i in range(4)]
        for request in requests:
            await _run(cluster, request)
        cluster.fabric.network.clear_faults()
        await cluster.router.workers.poll_faults()
        assert not cluster.router.workers.decode[0].is_behind_fault
    assert {r.decode_worker for r in requests} == {"decode-1"}
    assert all(r.num_migrations == 0 for r in requests), "routed around, not broken and moved"


async def test_a_kv_whose_prefill_die_cannot_send_is_recomputed_elsewhere_not_moved():
    sampling = Sampling(seed=4)
    async with _cluster(fault_poll_s=1000.0) as cluster:
        prefills = cluster.router.workers.prefill
        prefills[1].num_inflight = 5  # prefill-0 computes it first
        for _ in range(3):  # the fault poll's first look, before the fault
            await asyncio.sleep(0)
        # The fault comes after the fault poll's last look: the router still sends to prefill-0,
        # whose dies compute but cannot send, so the first decode's pull is refused.
        lease = cluster.fabric.leases.leases["prefill-0"]
        cluster.fabric.network.inject([topology.rdma_port(d, "tx") for d in lease.dies], 0.0, 1000.0)
        request = cluster.router.make_request("r", "", PROMPT, 16, sampling)
        got = [t for chunk in await _run(cluster, request) for t in chunk]
        cluster.fabric.network.clear_faults()
    assert got == tokens.TokenModel(PROMPT, 4).generate(16)
    assert request.num_migrations == 0, "no decode instance could have pulled it: not moved between them"
    assert request.num_prefills == 2 and request.kv is not None and request.kv.prefill_worker == "prefill-1"
