"""How engines reach each other, the pool and the fabric: Protocols over plain records.

An engine never sees protobuf or a channel. Live services plug in the gRPC clients of
`runtime/grpc_peers.py`; the in-process cluster (`inproc.py`) plugs in direct calls into the
other engines. Every implementation raises the domain errors of `runtime/errors.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from supernode.core.request import KvHandle, Sampling
from supernode.runtime.clock import Clock
from supernode.runtime.early_first import OnFirstToken
from supernode.runtime.errors import FailedPreconditionError, SupernodeError, UnavailableError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Die:
    index: int  # global die index, 0..767 on a full CloudMatrix384
    node: int  # node index
    npu: int  # NPU index within the node
    die: int  # die index within the NPU package


@dataclass(frozen=True, slots=True)
class TransferResult:
    start_s: float  # emulated
    finish_s: float  # emulated

    @property
    def duration_s(self) -> float:
        return self.finish_s - self.start_s


@dataclass(frozen=True, slots=True)
class PoolBlock:
    key: str  # prefix-chained block key
    tokens: Sequence[int]  # the block's token ids


@dataclass(frozen=True, slots=True)
class PoolRead:
    blocks: Sequence[Sequence[int]]  # token ids of each block found, in the order asked
    missing_keys: list[str]  # keys not found (or failing verification)


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    worker_id: str
    role: str  # "prefill" or "decode"
    num_running: int  # requests in the current batch
    num_waiting: int  # requests queued behind them
    max_queue: int  # bound of the waiting queue
    kv_tokens_used: int  # KV tokens reserved (decode) or prompt tokens queued (prefill)
    kv_tokens_capacity: int  # KV tokens it can hold (decode) or batch token budget (prefill)
    draining: bool = False  # stopped admitting work
    num_dies: int = 0  # dies it emulates


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """An XL3M scoring job's answer."""

    score: float  # lower = more certain = more relevant (kept)
    compute_s: float  # emulated batch seconds apportioned to the job by its share of the tokens
    queue_s: float  # emulated seconds it waited for batches


@dataclass(frozen=True, slots=True)
class PrefillResult:
    first_token: int  # the prompt's first output token
    kv: KvHandle  # where its KV now lives
    num_cached_tokens: int  # prompt tokens loaded from the context cache instead of computed
    queue_s: float  # emulated s waiting for a batch
    load_s: float  # emulated s loading the cached prefix over UB
    compute_s: float  # emulated s of the batches that computed it


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: str  # present it to `decode`
    dp_rank: int  # the rank the request will run on
    die: Die  # the die of that rank (the P->D pull's destination)


@dataclass(frozen=True, slots=True)
class DecodeChunk:
    token_ids: list[int] = field(default_factory=list)  # tokens of one step (empty when only counted)
    num_tokens: int = 0  # tokens of one step
    kv_pull_s: float = 0.0  # on the first chunk: emulated s of the P->D pull
    finished: bool = False  # the last chunk
    finish_reason: str = ""  # on the last chunk: "length" or "stop"
    num_steps: int = 0  # on the last chunk: decode steps the request took part in


# ---------------------------------------------------------------- protocols


class FabricClient(Protocol):
    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[Die]: ...

    async def renew(self, worker_id: str) -> int: ...

    async def release(self, worker_id: str) -> None: ...

    async def transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> TransferResult: ...

    def start_transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> asyncio.Future[object]:
        """Starts `transfer` in the background: the future is done once it has moved (or failed, with
        its error, also when it could not start: this raises nothing); nobody need await it. Must be
        called from the event loop."""
        ...

    async def close(self) -> None: ...


class PoolClient(Protocol):
    async def lookup(self, keys: Sequence[str]) -> int:
        """How many leading keys are stored."""
        ...

    async def put(self, blocks: Sequence[PoolBlock]) -> int:
        """Stores the blocks (content-addressed: present ones are kept); returns how many were new."""
        ...

    async def get(self, keys: Sequence[str]) -> PoolRead: ...

    async def close(self) -> None: ...


class PrefillPeer(Protocol):
    address: str  # how the router names it (host:port, or an in-process name)

    async def prefill(
        self, request_id: str, prompt: Sequence[int], sampling: Sampling,
        on_first_token: OnFirstToken | None = None, sent_s: float = 0.0,
    ) -> PrefillResult:  # fmt: skip
        """Computes the prompt's KV; `on_first_token(token, due_s)` gets the first token as soon as the
        prompt is computed, before the new blocks are stored (the result follows once they are), or
        earlier, due at the emulated instant `due_s` it is computed (0: now). `sent_s`: the
        emulated instant the caller sent it (0: unknown)."""
        ...

    async def score(
        self, request_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        """An XL3M scoring job: prefill of segment + question at the scoring priority, no KV kept."""
        ...

    async def load(self) -> LoadSnapshot: ...

    async def close(self) -> None: ...


class DecodePeer(Protocol):
    address: str

    async def reserve(self, request_id: str, num_prompt_tokens: int, max_tokens: int) -> Reservation: ...

    async def cancel_reservation(self, reservation_id: str) -> bool: ...

    def decode(
        self,
        reservation_id: str,
        kv: KvHandle,
        first_token: int,
        max_tokens: int,
        sampling: Sampling,
        num_resumed: int = 0,
    ) -> AsyncGenerator[DecodeChunk, None]:
        """The request's chunks until one with `finished`; closing the iterator cancels it.
        `num_resumed`: a migrated request's output tokens before `first_token` (in the KV)."""
        ...

    async def load(self) -> LoadSnapshot: ...

    async def close(self) -> None: ...


class FaultSource(Protocol):
    async def workers_behind_faults(self) -> frozenset[str]:
        """Worker ids holding a die behind a fabric link that is down now (core.policy)."""
        ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- die leases


class DieLease:
    """A worker's dies: leased at start (retrying while the fabric comes up), renewed, released."""

    def __init__(
        self, fabric: FabricClient, worker_id: str, role: str, num_dies: int, ttl_s: float,
        clock: Clock | None = None,
    ) -> None:  # fmt: skip
        self.fabric = fabric
        self.worker_id = worker_id
        self.role = role
        self.num_dies = num_dies
        self.ttl_s = ttl_s  # wall s (emulated s when `clock` is given)
        self.clock = clock  # heartbeat on this clock instead of the wall
        self.dies: list[Die] = []
        self._task: asyncio.Task[None] | None = None

    async def acquire(self, attempts: int = 50, heartbeat: bool = True) -> None:
        for attempt in range(attempts):
            try:
                self.dies = await self.fabric.lease(self.worker_id, self.role, self.num_dies)
                break
            except UnavailableError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.2)
        if heartbeat:
            self._task = asyncio.create_task(self._heartbeat(), name=f"{self.worker_id}-lease")

    async def _heartbeat(self) -> None:
        while True:
            await (self.clock.sleep(self.ttl_s / 3) if self.clock else asyncio.sleep(self.ttl_s / 3))
            try:
                try:
                    await self.fabric.renew(self.worker_id)
                except FailedPreconditionError:
                    log.warning("lease of %s expired; leasing again", self.worker_id)
                    self.dies = await self.fabric.lease(self.worker_id, self.role, self.num_dies)
            except SupernodeError as err:
                log.warning("lease heartbeat failed: %s", err.message)

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            await self.fabric.release(self.worker_id)
        except SupernodeError as err:
            log.warning("could not release dies: %s", err.message)

    def die(self, slot: int) -> Die:
        """The die at `slot` (modulo the dies held); UNAVAILABLE when the lease is missing."""
        if not self.dies:
            raise UnavailableError(f"{self.role} holds no dies (fabric lease missing)")
        return self.dies[slot % len(self.dies)]
