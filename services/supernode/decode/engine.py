"""The decode worker's engine: `num_dies` data-parallel ranks of one decode instance, transport-free.

The instance emulated is the paper's: one EP group of `ep_size` dies with DP attention. The engine
runs `num_dies` of its ranks and assumes the group's other ranks carry the same load, so a few dies
reproduce the per-NPU behaviour of the 160-NPU instance (the simulation can run all 320).

A request's states here (core/request.py):
1. QUEUED: `reserve` put KV capacity (prompt + max_tokens) aside on the rank with most room (the
   router calls it before prefill starts: the paper's asynchronous prefill scheduling); released if
   `decode` does not take it up within the reservation TTL;
2. TRANSFERRING: `decode` reads the prompt's blocks from the pool (prefix chain verified, the context
   rebuilt from them) and the fabric charges the prefill -> decode RDMA pull;
3. DECODING: waiting, then running in the continuous batch: each step is priced by `price(batch)` for
   the batch it runs, MTP drafts accepted at random (seeded per request);
4. FINISHED on max_tokens or a stop token, or CANCELLED when the caller leaves; capacity released.
If the step loop fails, every reserved, waiting and running request FAILS with UNAVAILABLE, its
capacity is released, and the worker refuses new reservations (runtime/supervision.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import uuid
from collections.abc import AsyncGenerator

from supernode.core import blocks, topology
from supernode.core.request import KV_UNREACHABLE, KvHandle, Request, RequestStatus, Sampling
from supernode.core.scheduler import CapacityError, DecodeBatch, DecodeScheduler, QueueFullError, kv_len_at
from supernode.core.tokens import EosPlan, TokenModel, is_valid_token
from supernode.decode.stepping import MultiStepPricer
from supernode.hw import cost as hw_cost
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.deployments import decode_deployment
from supernode.runtime.engine import StepFailure, StepLoop
from supernode.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    invalid,
)
from supernode.runtime.peers import DecodeChunk, DieLease, FabricClient, LoadSnapshot, PoolClient, Reservation
from supernode.runtime.supervision import Supervisor
from supernode.runtime.worker_metrics import WorkerMetrics, configure_decode_metrics

log = logging.getLogger(__name__)


class _Outbox:
    """A `decode` caller's stream: the step loop pushes, the caller's iterator pulls.

    Bounded at one pending chunk: tokens pushed before the reader takes them join that chunk (a slow
    reader gets several steps' tokens at once, as vLLM coalesces a lagging stream's outputs), so no
    token is lost and the buffer never grows beyond the request's own output."""

    def __init__(self) -> None:
        self.num_counted = 0  # a counting-only sequence's output tokens reported so far (first excluded)
        self._token_ids: list[int] = []  # pushed, not yet taken
        self._num_tokens = 0
        self._done: DecodeChunk | None = None  # the last chunk, once pushed
        self._waiter: asyncio.Future[None] | None = None

    def on_tokens(self, request: Request, token_ids: list[int], num_tokens: int) -> None:
        if request.token_plan is not None:  # counted: `num_tokens` is its total so far; send the rest
            num_tokens, self.num_counted = num_tokens - self.num_counted, num_tokens
        if num_tokens:
            self._token_ids += token_ids
            self._num_tokens += num_tokens
            self._wake()

    def on_done(self, request: Request) -> None:
        self._done = DecodeChunk(
            finished=True, finish_reason=request.finish_reason, num_steps=request.num_decode_steps
        )
        self._wake()

    async def get(self) -> DecodeChunk:
        """The tokens pushed since the last call as one chunk, else the last chunk; waits for either."""
        while not self._num_tokens and self._done is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._num_tokens:
            chunk = DecodeChunk(self._token_ids, self._num_tokens)
            self._token_ids, self._num_tokens = [], 0
            return chunk
        assert self._done is not None
        return self._done

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class DecodeEngine:
    def __init__(
        self, settings: Settings, clock: Clock, fabric: FabricClient, pool: PoolClient,
        *, materialise_tokens: bool = True, offload: bool = True, heartbeat: bool = True,
        max_steps_per_batch: int = 1,
    ) -> None:  # fmt: skip
        """`materialise_tokens`: draw the output tokens (False: only count them, for simulations);
        `max_steps_per_batch` > 1: counting-only batches run up to that many steps at once (see
        decode/stepping.py; 1 prices every step)."""
        self.cfg = settings.decode
        self.time_scale = settings.runtime.time_scale  # the reservation TTL is in wall seconds
        self.worker_id = self.cfg.worker_id or f"decode-{self.cfg.port}"
        self.block_tokens = settings.kvpool.block_tokens
        self.clock = clock
        self.fabric = fabric
        self.pool = pool
        self.materialise_tokens = materialise_tokens
        self.offload = offload
        self.heartbeat = heartbeat
        self.deployment = decode_deployment(self.cfg)
        capacity = hw_cost.kv_capacity_tokens_per_die(self.deployment)
        self.scheduler = DecodeScheduler(
            self.cfg.num_dies, self.cfg.max_batch_per_die, capacity, self.cfg.max_queue,
            mtp_depth=self.deployment.mtp_depth, mtp_accept=self.deployment.mtp_accept,
        )  # fmt: skip
        self.lease = DieLease(
            fabric, self.worker_id, "decode", self.cfg.num_dies, settings.fabric.lease_ttl_s
        )
        self.max_steps_per_batch = max_steps_per_batch
        self.pricer = MultiStepPricer(self.deployment, self.scheduler)
        self.loop: StepLoop[DecodeBatch] = StepLoop(
            self.worker_id, clock, self.schedule, self.price, self.postprocess,
            self.pricer.split if max_steps_per_batch > 1 else None, on_failure=self._on_step_failure,
        )  # fmt: skip
        self.reserved: dict[str, Request] = {}  # reservation id -> its record, until `decode` takes it
        self._expiry_task: asyncio.Task[None] | None = None
        self.metrics = WorkerMetrics(
            "decode", self.worker_id, self.cfg.num_dies / self.deployment.dies_per_npu
        )
        configure_decode_metrics(self.metrics, settings, self.scheduler.kv_capacity)
        self.metrics.track_lag(self.loop.stats)
        self.supervisor = Supervisor("decode", self.worker_id, self.metrics.registry)
        self._slo_limits: dict[int, int] = {}  # mean KV length -> largest batch per die meeting the SLO
        # A live stream sends a chunk every step, and the router gives up on a stream silent for its
        # liveness time (before the first chunk, its prefill timeout); a counted sequence sends none
        # until it finishes, so every running one reports its tokens so far at this interval (half
        # the router's bound, in emulated s), or a decode longer than that failed as if frozen.
        self.report_s = (
            min(settings.router.liveness_s * self.time_scale, settings.router.prefill_timeout_s) / 2
        )
        self._next_report_s = 0.0  # emulated instant of the next report
        self._step_s = 0.0  # the last batch's emulated seconds per step

    async def start(self) -> None:
        await self.lease.acquire(heartbeat=self.heartbeat)
        self.loop.start()
        self._expiry_task = asyncio.create_task(self._expire_reservations())

    async def stop(self) -> None:
        if self._expiry_task:
            self._expiry_task.cancel()
        await self.loop.stop()
        await self.lease.release()

    # -- the step

    def schedule(self) -> DecodeBatch | None:
        if self.cfg.tpot_slo_ms > 0:  # the limit moves with the context: one step at a time
            batch = self.scheduler.schedule(self._slo_batch_limit())
        else:
            batch = self.scheduler.schedule()
            if batch is not None and self.max_steps_per_batch > 1 and self.scheduler.is_counting_only:
                num_steps = min(self.max_steps_per_batch, self.scheduler.steps_until_change())
                if self._step_s > 0:  # end in time for the next report
                    now = self.clock.now()
                    if self._next_report_s <= now:  # idle since: no sequence ran that is owed one
                        self._next_report_s = now + self.report_s
                    until_s = self._next_report_s - now
                    num_steps = min(num_steps, max(1, math.ceil(until_s / self._step_s)))
                if num_steps > 1:
                    return batch.with_steps(num_steps)
        if batch is None:  # idle: the gauges say so rather than keep the last step's values
            self.metrics.on_idle()
            self._publish_queue()
        return batch

    def price(self, batch: DecodeBatch) -> hw_cost.Cost:
        """The cost model's time for one step of `batch`, from the actual ranks: attention from the
        busiest rank by work, the MoE from the real token count (the EP group's other ranks mirror
        these ranks' mean load). Counting-only batches are priced from the ranks' loads (stepping.py)."""
        if self.scheduler.is_counting_only:
            return self.pricer.price(batch)
        return hw_cost.decode_step_cost_ranks(self.deployment, batch.rank_kv_lens())

    def postprocess(self, batch: DecodeBatch, cost: hw_cost.Cost) -> None:
        outputs = self.scheduler.postprocess(batch)
        now = self.clock.now()
        for out in outputs:
            request = out.request
            sink = request.sink
            if sink is not None:
                sink.on_tokens(request, out.token_ids, out.num_tokens)
                if request.is_done:
                    request.finished_s = now
                    sink.on_done(request)
        self._report_counted(now)
        self._step_s = cost.total_us / 1e6 / batch.num_steps
        self.metrics.on_step(
            len(outputs), batch.max_batch_per_die, cost.total_us / 1e6, cost.breakdown_us,
            sum(o.num_tokens for o in outputs),
        )  # fmt: skip
        self._publish_queue()

    def _report_counted(self, now: float) -> None:
        """Every report interval: each running counted sequence sends the tokens it has emitted so far."""
        if now < self._next_report_s:
            return
        self._next_report_s = now + self.report_s
        step = self.scheduler.step
        for rank in self.scheduler.running:
            for request in rank:
                plan, done = request.token_plan, step - request.decode_start_step
                if plan is not None and request.sink is not None and 0 < done < len(plan):
                    request.sink.on_tokens(request, [], plan[done - 1])

    def _publish_queue(self) -> None:
        self.metrics.on_queue(
            len(self.scheduler.waiting) + len(self.reserved), self.scheduler.num_kv_reserved,
            self.block_tokens, self.loop.stats.max_lag_s,
        )  # fmt: skip

    def _on_step_failure(self, failure: StepFailure) -> None:
        """The loop stopped: fail every request it holds, give their capacity back, leave the rotation."""
        scheduler = self.scheduler
        held = [*self.reserved.values(), *scheduler.waiting, *(s for rank in scheduler.running for s in rank)]
        self.supervisor.trip(failure, held)
        for request in held:
            scheduler.release(request)
        self.reserved.clear()
        scheduler.waiting.clear()
        scheduler.clear_running()
        self.metrics.on_idle()
        self._publish_queue()

    def _slo_batch_limit(self) -> int:
        """Largest batch per die whose TPOT meets the SLO at the current mean context length."""
        seqs = [s for rank in self.scheduler.running for s in rank] + list(self.scheduler.waiting)
        step = self.scheduler.step
        mean_kv = round(sum(kv_len_at(s, step) for s in seqs) / len(seqs)) if seqs else 1024
        limit = self._slo_limits.get(mean_kv)  # the real mean length; answers cached per length
        if limit is None:
            limit = hw_cost.max_batch_per_die_for_tpot(self.deployment, mean_kv, self.cfg.tpot_slo_ms)
            limit = max(1, min(self.cfg.max_batch_per_die, limit))  # never starve: at least one runs
            if len(self._slo_limits) >= 4096:
                self._slo_limits.clear()
            self._slo_limits[mean_kv] = limit
        return limit

    # -- requests

    def reserve(self, request_id: str, num_prompt_tokens: int, max_tokens: int) -> Reservation:
        """Puts prompt + max_tokens of KV aside; RESOURCE_EXHAUSTED when no rank has room."""
        self.supervisor.check()
        if not request_id:
            raise invalid("request_id", "must not be empty")
        if num_prompt_tokens < 1:
            raise invalid("num_prompt_tokens", "must be >= 1")
        if max_tokens < 1:
            raise invalid("max_tokens", "must be >= 1")
        request = Request(request_id, [], max_tokens, arrival_s=self.clock.now())
        try:
            self.scheduler.reserve(request, num_prompt_tokens)
        except CapacityError as err:
            raise InvalidArgumentError(f"num_prompt_tokens + max_tokens: {err}", field="max_tokens") from err
        except QueueFullError as err:
            raise ResourceExhaustedError(f"decode full: {err}", retry_after_s=0.5) from err
        request.expires_s = request.arrival_s + self.cfg.reservation_ttl_s * self.time_scale
        reservation_id = uuid.uuid4().hex
        self.reserved[reservation_id] = request
        self._publish_queue()
        return Reservation(reservation_id, request.dp_rank, self.lease.die(request.dp_rank))

    def cancel_reservation(self, reservation_id: str) -> bool:
        request = self.reserved.pop(reservation_id, None)
        if request is None:
            return False
        request.end(RequestStatus.CANCELLED, "cancelled")
        self.scheduler.release(request)
        self._publish_queue()
        return True

    async def decode(
        self,
        reservation_id: str,
        kv: KvHandle,
        first_token: int,
        max_tokens: int,
        sampling: Sampling,
        num_resumed: int = 0,
    ) -> AsyncGenerator[DecodeChunk, None]:
        """Pulls the KV, joins the batch and yields each step's tokens, then a `finished` chunk.
        Closing the iterator early cancels the request and frees its slot. `num_resumed`: a migrated
        request's output tokens before `first_token` (its KV holds them; see DecodeScheduler.add)."""
        self.supervisor.check()
        request = self.reserved.pop(reservation_id, None)
        if request is None:
            raise FailedPreconditionError(
                "reservation_id: unknown or expired reservation", field="reservation_id"
            )
        outbox = _Outbox()
        try:
            request.advance(RequestStatus.TRANSFERRING)
            model = await self._admit(request, kv, first_token, max_tokens, sampling)
            self.supervisor.check()  # the loop may have failed while the KV was pulled
            request.sink = outbox
            self.scheduler.add(request, model, num_resumed)
            self.loop.wake()
            first = True
            while True:
                chunk = await outbox.get()
                if request.status is RequestStatus.FAILED:
                    raise self.supervisor.error()
                if first and not chunk.finished:
                    chunk = DecodeChunk(chunk.token_ids, chunk.num_tokens, kv_pull_s=request.kv_pull_s)
                    first = False
                yield chunk
                if chunk.finished:
                    return
        finally:
            if not request.is_done:
                self.scheduler.cancel(request)
                self._publish_queue()

    def load(self, draining: bool = False) -> LoadSnapshot:
        return LoadSnapshot(
            worker_id=self.worker_id,
            role="decode",
            num_running=self.scheduler.num_running,
            num_waiting=len(self.scheduler.waiting) + len(self.reserved),
            max_queue=self.cfg.max_queue,
            kv_tokens_used=self.scheduler.num_kv_reserved,
            kv_tokens_capacity=self.scheduler.kv_capacity * self.cfg.num_dies,
            draining=draining or self.supervisor.is_failed,
            num_dies=self.cfg.num_dies,
        )

    # -- helpers

    async def _admit(
        self, request: Request, kv: KvHandle, first_token: int, max_tokens: int, sampling: Sampling
    ) -> TokenModel | None:
        """Reads and verifies the prompt KV and charges the P->D pull; fills the record's prompt."""
        _check_handle(request, kv, first_token, max_tokens)
        read = await self.pool.get(kv.block_keys)
        if read.missing_keys:
            raise FailedPreconditionError(
                f"kv: {len(read.missing_keys)} of {len(kv.block_keys)} blocks are gone from the pool",
                field="kv",
            )
        prompt: list[int] = []
        if self.materialise_tokens:  # the ids seed the token model: check they re-derive the keys
            if not blocks.verify_chain(kv.block_keys, read.blocks, kv.block_tokens):
                raise FailedPreconditionError("kv: blocks do not match their prefix-chained keys", field="kv")
            prompt = list(itertools.chain.from_iterable(read.blocks))
        # Counting only, no token is drawn: the read checked each block's digest, and their headers
        # count their tokens, so no id is decoded (`prompt_len` stands for the prompt).
        num_tokens = len(prompt) if self.materialise_tokens else sum(map(len, read.blocks))
        if num_tokens != kv.num_tokens:
            raise invalid("kv.num_tokens", f"handle says {kv.num_tokens}, blocks hold {num_tokens}")
        die = self.lease.die(request.dp_rank).index
        try:
            result = await self.fabric.transfer(
                ("die", kv.prefill_die), ("die", die), kv.nominal_bytes, "rdma", "p2d"
            )
        except UnavailableError as err:
            if topology.rdma_port(kv.prefill_die, "tx") in topology.links_down(err.message):
                # The KV's own die cannot send: no decode instance could pull it, so the router
                # recomputes it elsewhere (as for KV gone from the pool) instead of moving the request.
                raise FailedPreconditionError(
                    f"{KV_UNREACHABLE}, the port of prefill die {kv.prefill_die} is down ({err.message})",
                    field="kv",
                ) from err
            raise
        request.kv_pull_s = result.duration_s
        request.prompt, request.max_tokens, request.sampling = prompt, max_tokens, sampling
        if not self.materialise_tokens:
            request.prompt_len = num_tokens
        request.first_token, request.kv = first_token, kv
        if not self.materialise_tokens:
            return None
        context = [*prompt, first_token]
        eos = _eos_plan(sampling)
        if self.offload:
            return await asyncio.to_thread(TokenModel, context, sampling.seed, eos)
        return TokenModel(context, sampling.seed, eos)

    async def _expire_reservations(self) -> None:
        while True:
            await self.clock.sleep(self.time_scale)  # about once a wall second
            now = self.clock.now()
            for rid, request in list(self.reserved.items()):
                if request.expires_s < now:
                    log.warning("reservation for %s expired unused", request.request_id)
                    self.cancel_reservation(rid)


def _eos_plan(sampling: Sampling) -> EosPlan | None:
    """Where the token model ends the sequence (the router's plan), None when it never does."""
    if sampling.ignore_eos or sampling.eos_position == 0:
        return None
    return EosPlan(sampling.eos_token_id, sampling.eos_position)


def _check_handle(request: Request, kv: KvHandle, first_token: int, max_tokens: int) -> None:
    if kv.request_id != request.request_id:
        raise invalid("kv.request_id", "does not match the reservation's request")
    if not kv.block_keys or kv.block_tokens < 1:
        raise invalid("kv", "handle has no blocks")
    bad = blocks.first_bad_block_key(kv.block_keys)
    if bad is not None:
        raise invalid(f"kv.block_keys[{bad}]", "must be a 32-character lowercase hex block key")
    if not (len(kv.block_keys) - 1) * kv.block_tokens < kv.num_tokens <= len(kv.block_keys) * kv.block_tokens:
        raise invalid(
            "kv.num_tokens", f"{kv.num_tokens} does not fit {len(kv.block_keys)} blocks of {kv.block_tokens}"
        )
    if not is_valid_token(first_token):
        raise invalid("first_token", "outside the vocabulary")
    if not 1 <= max_tokens <= request.num_kv_tokens:
        raise invalid("max_tokens", "must be >= 1 and within the reservation")
