"""The in-process cluster: router, N prefill and M decode engines, the fabric network and a pool, on one
clock, with direct-call peers (no gRPC). It runs the same engines as the live services: `supernode sim`
drives it on virtual time, and tests use it as a realistic backend.

Pieces: `InprocFabric` (the fabric's real flow model and die leases as a `FabricClient`), `LocalPool`
(the pool's real block logic over an in-memory LRU store), `LocalPrefillPeer` / `LocalDecodePeer`
(direct calls into the engines), and `InprocCluster`, which builds and starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from supernode.core import policy
from supernode.core.request import KvHandle, Request, Sampling
from supernode.core.topology import Endpoint, Plane, Route, Topology
from supernode.decode.engine import DecodeEngine
from supernode.fabric.leases import LeaseTable, die_coordinates
from supernode.fabric.network import FabricNetwork
from supernode.kvpool.local import LocalPool
from supernode.kvpool.store import MemoryKvStore
from supernode.prefill.engine import PrefillEngine
from supernode.router.engine import OutputChunk, RouterEngine
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.early_first import OnFirstToken
from supernode.runtime.errors import DeadlineExceededError, UnavailableError
from supernode.runtime.peers import (
    DecodeChunk,
    Die,
    LoadSnapshot,
    PrefillResult,
    Reservation,
    ScoreResult,
    TransferResult,
)  # fmt: skip

T = TypeVar("T")

MAX_CACHED_ROUTES = 1 << 16  # routes kept by the in-process fabric (dropped all at once past it)


class InprocFabric:
    """The fabric service's transfer engine and lease table behind the `FabricClient` Protocol."""

    def __init__(self, clock: Clock, num_nodes: int = 48) -> None:
        self.topology = Topology(num_nodes)
        self.network = FabricNetwork(self.topology, clock)
        self.leases = LeaseTable(num_nodes, ttl_s=float("inf"))  # in-process workers cannot vanish
        self.bytes_by_tag: dict[str, int] = {}  # nominal bytes moved per transfer tag ("kv-load", "p2d", ...)
        # (src, dst, plane) -> its route: the topology is fixed, and a run moves between few endpoints
        self._routes: dict[tuple[tuple[str, int], tuple[str, int], str], Route] = {}

    def start(self) -> None:
        self.network.start()

    async def stop(self) -> None:
        await self.network.stop()

    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[Die]:
        return [Die(d, *die_coordinates(d)) for d in self.leases.lease(worker_id, role, num_dies).dies]

    async def renew(self, worker_id: str) -> int:
        return self.leases.renew(worker_id)

    async def release(self, worker_id: str) -> None:
        self.leases.release(worker_id)

    async def transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> TransferResult:
        outcome = await self.network.transfer(self._route(src, dst, num_bytes, plane, tag), num_bytes)
        return TransferResult(outcome.start_s, outcome.finish_s)

    def start_transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> asyncio.Future[object]:
        """The flow starts now, with no task to wait for it (FabricNetwork.start_transfer). Like the
        task it replaces, it raises nothing: a transfer that cannot start fails its future."""
        try:
            route = self._route(src, dst, num_bytes, plane, tag)
            future: asyncio.Future[Any] = self.network.start_transfer(route, num_bytes)
        except Exception as err:  # noqa: BLE001 - handed to whoever looks at the future, as a task would
            future = asyncio.get_running_loop().create_future()
            future.set_exception(err)
        return future

    def _route(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> Route:
        """The route of a transfer (cached), its bytes counted under `tag`."""
        key = (src, dst, plane)
        route = self._routes.get(key)
        if route is None:
            route = self.topology.route(Endpoint(src[0], src[1]), Endpoint(dst[0], dst[1]), Plane(plane))  # type: ignore[arg-type]
            if len(self._routes) >= MAX_CACHED_ROUTES:
                self._routes.clear()
            self._routes[key] = route
        self.bytes_by_tag[tag] = self.bytes_by_tag.get(tag, 0) + num_bytes
        return route

    async def workers_behind_faults(self) -> frozenset[str]:
        """The router's `FaultSource`: workers behind a link a fault holds down now."""
        return policy.instances_behind_faults(
            self.network.faults.active.values(), self.leases.leases.values()
        )

    async def close(self) -> None:
        return None


class LocalPrefillPeer:
    def __init__(self, engine: PrefillEngine) -> None:
        self.engine = engine
        self.address = engine.worker_id

    async def prefill(
        self, request_id: str, prompt: Sequence[int], sampling: Sampling,
        on_first_token: OnFirstToken | None = None, sent_s: float = 0.0,
    ) -> PrefillResult:  # fmt: skip
        return await self.engine.prefill(request_id, prompt, sampling, on_first_token, sent_s)

    async def score(
        self, request_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        return await self.engine.score(request_id, list(segment), list(question), score_fn)

    async def load(self) -> LoadSnapshot:
        return self.engine.load()

    async def close(self) -> None:
        return None


class LocalDecodePeer:
    def __init__(self, engine: DecodeEngine) -> None:
        self.engine = engine
        self.address = engine.worker_id

    async def reserve(self, request_id: str, num_prompt_tokens: int, max_tokens: int) -> Reservation:
        return self.engine.reserve(request_id, num_prompt_tokens, max_tokens)

    async def cancel_reservation(self, reservation_id: str) -> bool:
        return self.engine.cancel_reservation(reservation_id)

    def decode(
        self,
        reservation_id: str,
        kv: KvHandle,
        first_token: int,
        max_tokens: int,
        sampling: Sampling,
        num_resumed: int = 0,
    ) -> AsyncGenerator[DecodeChunk, None]:
        return self.engine.decode(reservation_id, kv, first_token, max_tokens, sampling, num_resumed)

    async def load(self) -> LoadSnapshot:
        return self.engine.load()

    async def close(self) -> None:
        return None


class Outage:
    """An instance an injected fault killed or froze, as its peers see it (`InprocCluster.kill`,
    `InprocCluster.freeze`; `supernode sim --fault`). Killed: every call fails at once with a
    transport error, calls in flight included, as a killed process's connections do. Frozen (SIGSTOP):
    calls never answer, and the router learns of it from its probes and its calls' bounds. Either way
    its load probe fails and its step loop no longer runs."""

    def __init__(self, worker_id: str, clock: Clock, call_timeout_s: float) -> None:
        self.worker_id = worker_id
        self.clock = clock
        self.call_timeout_s = call_timeout_s  # emulated s a unary call to a frozen instance waits
        self.state = ""  # "", "killed" or "stopped"
        self.num_inflight = 0  # calls into the instance not yet answered
        self._killed = asyncio.Event()
        self._resumed = asyncio.Event()  # set when a frozen instance carries on

    def error(self) -> UnavailableError:
        err = UnavailableError(f"{self.worker_id}: connection reset (the process was killed)")
        err.from_service = False  # the transport failed, as for a live process that died
        return err

    def kill(self) -> int:
        """Marks the instance dead and cuts its calls in flight; returns how many there were."""
        self.state = "killed"
        self._killed.set()
        return self.num_inflight

    def freeze(self) -> int:
        """Marks the instance frozen; returns how many calls in flight now wait for it."""
        self.state = "stopped"
        self._resumed = asyncio.Event()
        return self.num_inflight

    def resume(self) -> None:
        """A frozen instance carries on (SIGCONT): the calls waiting at its door go in."""
        self.state = ""
        self._resumed.set()

    def revive(self) -> None:
        """A killed instance's process is back (a fresh one: calls reach its new engine)."""
        self.state = ""
        self._killed = asyncio.Event()

    async def enter(self, unary: bool = False) -> None:
        """Before a call: a killed instance refuses it; a frozen one answers nothing until it carries
        on, so a `unary` call ends with DEADLINE_EXCEEDED after the router's call timeout, as its
        gRPC call would (the router bounds prefill calls and decode streams itself)."""
        if self.state == "killed":
            raise self.error()
        if self.state == "stopped":
            if not unary:
                await self._resumed.wait()  # or until the caller gives up
                return
            waits = (
                asyncio.ensure_future(self._resumed.wait()),
                asyncio.ensure_future(self.clock.sleep(self.call_timeout_s)),
            )
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if self.state == "stopped":
                late = DeadlineExceededError(f"{self.worker_id}: no answer within {self.call_timeout_s:g} s")
                late.from_service = False
                raise late

    def probe(self) -> None:
        if self.state:
            err = UnavailableError(f"{self.worker_id}: probe: no answer")
            err.from_service = False
            raise err

    async def call(self, awaitable: Awaitable[T]) -> T:
        """`awaitable`'s result, or the transport error once the instance is killed."""
        self.num_inflight += 1
        task = asyncio.ensure_future(awaitable)
        killed = asyncio.ensure_future(self._killed.wait())
        try:
            await asyncio.wait((task, killed), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller gave up (a deadline, a cancel): so does the call
            await _cancelled(task)
            raise
        finally:
            killed.cancel()
            self.num_inflight -= 1
        if not task.done():
            await _cancelled(task)
            raise self.error()
        return task.result()


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancels `task` and waits until it has ended, so a generator step it ran is no longer running."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()  # retrieved: it ended on its own meanwhile, and nobody wants the outcome


class FaultablePrefillPeer(LocalPrefillPeer):
    """A prefill peer an injected fault can kill or freeze (only such instances pay for the checks):
    LocalPrefillPeer's calls behind its `Outage`."""

    def __init__(self, engine: PrefillEngine, call_timeout_s: float) -> None:
        super().__init__(engine)
        self.outage = Outage(engine.worker_id, engine.clock, call_timeout_s)

    async def prefill(self, *args: Any, **kwargs: Any) -> PrefillResult:
        await self.outage.enter()
        return await self.outage.call(super().prefill(*args, **kwargs))

    async def score(self, *args: Any, **kwargs: Any) -> ScoreResult:
        await self.outage.enter()
        return await self.outage.call(super().score(*args, **kwargs))

    async def load(self) -> LoadSnapshot:
        self.outage.probe()
        return await super().load()


class FaultableDecodePeer(LocalDecodePeer):
    """A decode peer an injected fault can kill or freeze: LocalDecodePeer's calls behind its
    `Outage`, a stream's every chunk included."""

    def __init__(self, engine: DecodeEngine, call_timeout_s: float) -> None:
        super().__init__(engine)
        self.outage = Outage(engine.worker_id, engine.clock, call_timeout_s)

    async def reserve(self, *args: Any, **kwargs: Any) -> Reservation:
        await self.outage.enter(unary=True)
        return await super().reserve(*args, **kwargs)

    async def cancel_reservation(self, *args: Any, **kwargs: Any) -> bool:
        await self.outage.enter(unary=True)
        return await super().cancel_reservation(*args, **kwargs)

    async def decode(self, *args: Any, **kwargs: Any) -> AsyncGenerator[DecodeChunk, None]:
        await self.outage.enter()
        chunks = super().decode(*args, **kwargs)
        try:
            while True:
                try:
                    chunk = await self.outage.call(anext(chunks))
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            await chunks.aclose()

    async def load(self) -> LoadSnapshot:
        self.outage.probe()
        return await super().load()


@dataclass(frozen=True, slots=True)
class ClusterShape:
    num_prefill: int = 6  # prefill instances (paper: 6)
    num_decode: int = 1  # decode instances (paper: 1)
    prefill_npus: int = 16  # NPUs per prefill instance (paper: 16)
    decode_dies: int = 320  # dies per decode instance, all emulated (paper: EP320 on 160 NPUs)
    pool_bytes: int = 32 * 4 * 192 * 10**9  # nominal EMS DRAM (bytes); ASSUMPTION: 192 GB per CPU socket
    num_nodes: int = 48  # supernode nodes the fabric models


def instance_settings(base: Settings, role: str, index: int, **fields: object) -> Settings:
    """`base` with one instance's own worker id and fields in its role's section."""
    data = base.model_dump()
    data[role].update(worker_id=f"{role}-{index}", metrics_port=0, **fields)
    return Settings.model_validate(data)


class InprocCluster:
    """Every engine of a deployment in this process, on `clock`; `async with` starts and stops it."""

    def __init__(
        self, settings: Settings, clock: Clock, shape: ClusterShape | None = None,
        *, materialise_tokens: bool = True, max_steps_per_batch: int = 1, early_first: bool = False,
        faultable: Collection[str] = (),
    ) -> None:  # fmt: skip
        """`max_steps_per_batch`: see DecodeEngine (decode runs of counting-only steps priced at once);
        `early_first`: see PrefillEngine (off: on virtual time the offer at a batch's end is the same);
        `faultable`: worker ids ("prefill-0", "decode-1") that `kill` and `freeze` may take down."""
        self.shape = shape or ClusterShape()
        self.clock = clock
        self.settings = settings
        self.fabric = InprocFabric(clock, self.shape.num_nodes)
        ratio = 0.0 if not materialise_tokens else settings.kvpool.payload_ratio
        self.pool = LocalPool(MemoryKvStore(_store_cap(self.shape.pool_bytes, ratio, settings)),
                              settings.kvpool.namespace, ratio)  # fmt: skip
        self._materialise_tokens = materialise_tokens
        self._max_steps_per_batch = max_steps_per_batch
        self._early_first = early_first
        self.prefills = [self._prefill_engine(i) for i in range(self.shape.num_prefill)]
        self.decodes = [self._decode_engine(i) for i in range(self.shape.num_decode)]
        self.retired: list[PrefillEngine | DecodeEngine] = []  # engines of instances killed and restarted
        self._muted = False
        timeout_s = settings.router.call_timeout_s * settings.runtime.time_scale  # in emulated s
        prefill_peers = [
            FaultablePrefillPeer(e, timeout_s) if e.worker_id in faultable else LocalPrefillPeer(e)
            for e in self.prefills
        ]
        decode_peers = [
            FaultableDecodePeer(e, timeout_s) if e.worker_id in faultable else LocalDecodePeer(e)
            for e in self.decodes
        ]
        self.faultable: dict[str, FaultablePrefillPeer | FaultableDecodePeer] = {
            p.engine.worker_id: p
            for p in [*prefill_peers, *decode_peers]
            if isinstance(p, (FaultablePrefillPeer, FaultableDecodePeer))
        }
        unknown = set(faultable) - self.faultable.keys()
        if unknown:
            raise ValueError(f"faultable: no instance {', '.join(sorted(unknown))} in this cluster")
        self.router = RouterEngine(
            settings, clock, prefill_peers, decode_peers, faults=self.fabric, peers_are_local=True
        )

    def _prefill_engine(self, index: int) -> PrefillEngine:
        settings = instance_settings(self.settings, "prefill", index, num_npus=self.shape.prefill_npus)
        return PrefillEngine(
            settings, self.clock, self.fabric, self.pool, offload=False, heartbeat=False,
            num_pool_cpus=self.fabric.topology.num_cpus, early_first=self._early_first,
        )  # fmt: skip

    def _decode_engine(self, index: int) -> DecodeEngine:
        settings = instance_settings(self.settings, "decode", index, num_dies=self.shape.decode_dies)
        return DecodeEngine(
            settings, self.clock, self.fabric, self.pool, materialise_tokens=self._materialise_tokens,
            offload=False, heartbeat=False, max_steps_per_batch=self._max_steps_per_batch,
        )  # fmt: skip

    def mute_metrics(self) -> None:
        """Skips the engines' Prometheus updates (a simulation serves no metrics port)."""
        self._muted = True
        engines: list[PrefillEngine | DecodeEngine] = [*self.prefills, *self.decodes]
        for engine in engines:
            engine.metrics.mute()

    async def start(self) -> None:
        self.fabric.start()
        for prefill in self.prefills:
            await prefill.start()
        for decode in self.decodes:
            await decode.start()
        self.router.start()

    async def stop(self) -> None:
        await self.router.stop()
        for prefill in self.prefills:
            await prefill.stop()
        for decode in self.decodes:
            await decode.stop()
        await self.fabric.stop()

    async def kill(self, worker_id: str) -> int:
        """The instance dies (SIGKILL): its step loop stops and its calls in flight fail at once with
        a transport error; returns how many it cut. `worker_id` must have been `faultable`."""
        peer = self.faultable[worker_id]
        await peer.engine.loop.stop()
        return peer.outage.kill()

    async def freeze(self, worker_id: str) -> int:
        """The instance freezes (SIGSTOP): its step loop stops and nothing it was asked is answered
        until `restart`; returns how many calls in flight were left waiting."""
        peer = self.faultable[worker_id]
        await peer.engine.loop.stop()
        return peer.outage.freeze()

    async def restart(self, worker_id: str) -> None:
        """A frozen instance carries on where it stopped (SIGCONT); a killed one comes back as a fresh
        process on the same dies, holding nothing (its old engine joins `retired`)."""
        peer = self.faultable[worker_id]
        if peer.outage.state == "stopped":
            peer.engine.loop.start()
            peer.outage.resume()
            return
        old = peer.engine
        await old.stop()  # gives its dies back
        if isinstance(peer, FaultablePrefillPeer):
            index = self.prefills.index(peer.engine)
            peer.engine = self.prefills[index] = self._prefill_engine(index)
        else:
            index = self.decodes.index(peer.engine)
            peer.engine = self.decodes[index] = self._decode_engine(index)
        if self._muted:
            peer.engine.metrics.mute()
        await peer.engine.start()
        self.retired.append(old)
        peer.outage.revive()

    def fault_node(self, node: int, factor: float, duration_s: float) -> int:
        """Every link of `node` at `factor` of its capacity (0: down) for `duration_s` emulated seconds,
        as the fabric service's InjectFault; returns the transfers it failed."""
        links = self.fabric.topology.links_of_node(node)
        _, num_failed = self.fabric.network.inject(links, factor, duration_s)
        return num_failed

    async def __aenter__(self) -> InprocCluster:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def generate(self, request: Request) -> AsyncGenerator[OutputChunk, None]:
        """The router engine's stream for `request` (see RouterEngine.generate)."""
        async for chunk in self.router.generate(request):
            yield chunk


def _store_cap(pool_bytes: int, ratio: float, settings: Settings) -> int:
    """The in-memory store's byte cap that holds as many blocks as `pool_bytes` of nominal KV."""
    from supernode.core import blocks
    from supernode.hw.specs import KV_BYTES_PER_TOKEN

    bt = settings.kvpool.block_tokens
    stored = blocks.payload_size(bt, KV_BYTES_PER_TOKEN, ratio) + blocks.DIGEST_BYTES
    return max(1, pool_bytes // (bt * KV_BYTES_PER_TOKEN)) * stored


@contextlib.asynccontextmanager
async def serve_router(cluster: InprocCluster, settings: Settings) -> AsyncIterator[str]:
    """Serves the live router's gRPC codec over `cluster`'s router engine on 127.0.0.1:<ephemeral>;
    yields its address. A backend for clients (frontend, SDK, loadgen) that runs the real logic."""
    from supernode.router.service import build
    from supernode.runtime.server import ServiceHost

    data = settings.model_dump()
    data["router"]["metrics_port"] = 0
    quiet = Settings.model_validate(data)
    host = ServiceHost(quiet, build(quiet, cluster.clock, cluster.router), 0)
    async with cluster:
        await host.start()
        try:
            yield host.address
        finally:
            await host.drain_and_stop()
