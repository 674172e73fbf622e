"""The decode service: `num_dies` data-parallel ranks of one decode instance (default EP320).

The instance emulated is the paper's: one EP group of `ep_size` dies with DP attention. This service
runs `num_dies` of its ranks and assumes the group's other ranks carry the same load, so one process
reproduces the per-NPU behaviour of the 160-NPU instance with a few hundred sequences.

A request's states here:
1. `Reserve`: KV capacity (prompt + max_tokens) reserved on the rank with most room (router calls
   this before prefill starts: the paper's asynchronous prefill scheduling);
2. `Decode`: the prompt's blocks are read from the pool (digests and prefix chain verified, the
   context rebuilt from them) and the prefill -> decode RDMA transfer is charged by the fabric;
3. waiting, then running in the continuous batch: each step of the one step loop is priced by the
   cost model for the busiest rank's batch and context lengths, MTP drafts accepted at random
   (seeded per request);
4. finished on max_tokens or a stop token (or cancelled by the client); its capacity is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import grpc

from supernode.core import blocks
from supernode.core.scheduler import CapacityError, DecodeScheduler, DecodeSeq, QueueFullError, Reservation
from supernode.core.tokens import TokenModel, is_valid_token
from supernode.hw import cost as hw_cost
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.deployments import decode_deployment
from supernode.runtime.engine import StepLoop
from supernode.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    invalid,
)
from supernode.runtime.metrics import start_metrics_server
from supernode.runtime.peers import DieLease, FabricClient, PoolClient, worker_builder
from supernode.runtime.server import Drain, stream, unary
from supernode.runtime.tokenization import eos_plan
from supernode.runtime.worker_metrics import WorkerMetrics, configure_decode_metrics
from supernode.v1 import common_pb2, decode_pb2, decode_pb2_grpc

log = logging.getLogger(__name__)
_DONE = None


class DecodeService(decode_pb2_grpc.DecodeServicer):
    service_names = (decode_pb2.DESCRIPTOR.services_by_name["Decode"].full_name,)

    def __init__(
        self, settings: Settings, clock: Clock, fabric: FabricClient, pool: PoolClient, drain: Drain
    ) -> None:
        self.settings = settings
        self.cfg = settings.decode
        self.worker_id = self.cfg.worker_id or f"decode-{self.cfg.port}"
        self.clock = clock
        self.fabric = fabric
        self.pool = pool
        self.drain = drain
        self.deployment = decode_deployment(self.cfg)
        capacity = hw_cost.kv_capacity_tokens_per_die(self.deployment)
        self.scheduler = DecodeScheduler(
            self.cfg.num_dies,
            self.cfg.max_batch_per_die,
            capacity,
            self.cfg.max_queue,
            mtp_depth=self.deployment.mtp_depth,
            mtp_accept=self.deployment.mtp_accept,
        )
        self.lease = DieLease(
            fabric, self.worker_id, "decode", self.cfg.num_dies, settings.fabric.lease_ttl_s
        )
        self.loop: StepLoop[list[list[DecodeSeq]]] = StepLoop(
            self.worker_id, clock, self._schedule, self._price, self._publish
        )
        self._pending: dict[
            str, tuple[Reservation, float]
        ] = {}  # reservation id -> (reservation, wall deadline)
        self._outboxes: dict[str, asyncio.Queue[list[int] | None]] = {}
        self._expiry_task: asyncio.Task[None] | None = None
        self.metrics = WorkerMetrics(
            "decode", self.worker_id, self.cfg.num_dies / self.deployment.dies_per_npu
        )
        configure_decode_metrics(self.metrics, settings, self.scheduler.kv_capacity)
        self._slo_limits: dict[int, int] = {}  # mean KV length -> largest batch per die meeting the SLO

    async def start(self) -> None:
        start_metrics_server(self.cfg.metrics_port, self.settings.runtime.bind_host, self.metrics.registry)
        await self.lease.acquire()
        self.loop.start()
        self._expiry_task = asyncio.create_task(self._expire_reservations())

    async def stop(self) -> None:
        if self._expiry_task:
            self._expiry_task.cancel()
        await self.loop.stop()
        await self.lease.release()
        await self.fabric.close()
        await self.pool.close()

    # -- the step

    def _schedule(self) -> list[list[DecodeSeq]] | None:
        if self.cfg.tpot_slo_ms > 0:
            self.scheduler.max_batch_per_die = self._slo_batch_limit()
        return self.scheduler.schedule()

    def _slo_batch_limit(self) -> int:
        """Largest batch per die whose TPOT meets the SLO at the current mean context length."""
        seqs = [s for batch in self.scheduler.running for s in batch] + list(self.scheduler.waiting)
        mean_kv = round(sum(s.kv_len for s in seqs) / len(seqs)) if seqs else 1024
        limit = self._slo_limits.get(mean_kv)  # the real mean length; answers cached per length
        if limit is None:
            limit = hw_cost.max_batch_per_die_for_tpot(self.deployment, mean_kv, self.cfg.tpot_slo_ms)
            limit = max(1, min(self.cfg.max_batch_per_die, limit))  # never starve: at least one runs
            if len(self._slo_limits) >= 4096:
                self._slo_limits.clear()
            self._slo_limits[mean_kv] = limit
        return limit

    def _price(self, batches: list[list[DecodeSeq]]) -> hw_cost.Cost:
        """The step from the actual ranks: the other ranks of the EP group mirror these ranks' mean load."""
        return hw_cost.decode_step_cost_ranks(self.deployment, [[s.kv_len for s in b] for b in batches])

    def _publish(self, batches: list[list[DecodeSeq]], cost: hw_cost.Cost) -> None:
        outputs = self.scheduler.postprocess()
        self.metrics.on_step(
            len(outputs),
            max((len(b) for b in batches), default=0),
            cost.total_us / 1e6,
            cost.breakdown_us,
            sum(len(o.token_ids) for o in outputs),
        )
        self.metrics.on_queue(
            len(self.scheduler.waiting) + len(self._pending),
            sum(self.scheduler.kv_reserved),
            self.settings.kvpool.block_tokens,
            self.loop.stats.max_lag_s,
        )
        for out in outputs:
            outbox = self._outboxes.get(out.seq.request_id)
            if outbox is None:
                continue
            if out.token_ids:
                outbox.put_nowait(out.token_ids)
            if out.seq.is_finished:
                outbox.put_nowait(_DONE)

    # -- RPCs

    @unary()
    async def Reserve(self, request: decode_pb2.ReserveRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        if not request.request_id:
            raise invalid("request_id", "must not be empty")
        if request.num_prompt_tokens < 1:
            raise invalid("num_prompt_tokens", "must be >= 1")
        if request.max_tokens < 1:
            raise invalid("max_tokens", "must be >= 1")
        if request.request_id in self.scheduler.reservations:
            raise invalid("request_id", f"{request.request_id} already holds a reservation")
        try:
            reservation = self.scheduler.reserve(
                request.request_id, request.num_prompt_tokens, request.max_tokens
            )
        except CapacityError as err:
            raise InvalidArgumentError(f"num_prompt_tokens + max_tokens: {err}", field="max_tokens") from err
        except QueueFullError as err:
            raise ResourceExhaustedError(f"decode full: {err}", retry_after_s=0.5) from err
        reservation_id = uuid.uuid4().hex
        self._pending[reservation_id] = (reservation, time.monotonic() + self.cfg.reservation_ttl_s)
        return decode_pb2.ReserveResponse(
            reservation_id=reservation_id, dp_rank=reservation.dp_rank, die=self._die(reservation.dp_rank)
        )

    @unary(track=False)
    async def CancelReservation(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        pending = self._pending.pop(request.reservation_id, None)
        if pending is not None:
            self.scheduler.release(pending[0].request_id)
        return decode_pb2.CancelReservationResponse(cancelled=pending is not None)

    @stream()
    async def Decode(self, request: decode_pb2.DecodeRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        pending = self._pending.pop(request.reservation_id, None)
        if pending is None:
            raise FailedPreconditionError(
                "reservation_id: unknown or expired reservation", field="reservation_id"
            )
        reservation = pending[0]
        try:
            seq, pull_s = await self._admit(request, reservation)
        except BaseException:
            self.scheduler.release(reservation.request_id)
            raise
        outbox: asyncio.Queue[list[int] | None] = asyncio.Queue()
        self._outboxes[reservation.request_id] = outbox
        self.scheduler.add(seq)
        self.loop.wake()
        first = True
        try:
            while True:
                item = await outbox.get()
                if item is _DONE:
                    yield decode_pb2.DecodeChunk(
                        finished=True, finish_reason=seq.finish_reason, num_steps=seq.num_steps
                    )
                    return
                yield decode_pb2.DecodeChunk(token_ids=item, kv_pull_s=pull_s if first else 0.0)
                first = False
        finally:
            self._outboxes.pop(reservation.request_id, None)
            if not seq.is_finished:
                self.scheduler.cancel(seq)

    @unary(track=False)
    async def Load(self, request: common_pb2.LoadRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return common_pb2.LoadReport(
            worker_id=self.worker_id,
            role="decode",
            num_running=self.scheduler.num_running,
            num_waiting=len(self.scheduler.waiting) + len(self._pending),
            max_queue=self.cfg.max_queue,
            kv_tokens_used=sum(self.scheduler.kv_reserved),
            kv_tokens_capacity=self.scheduler.kv_capacity * self.cfg.num_dies,
            draining=not self.drain.is_admitting,
            num_dies=self.cfg.num_dies,
        )

    # -- helpers

    async def _admit(
        self, request: decode_pb2.DecodeRequest, reservation: Reservation
    ) -> tuple[DecodeSeq, float]:
        """Reads and verifies the prompt KV, charges the P->D pull; the sequence ready to join."""
        kv = request.kv
        if kv.request_id != reservation.request_id:
            raise invalid("kv.request_id", "does not match the reservation's request")
        if not kv.block_keys or kv.block_tokens < 1:
            raise invalid("kv", "handle has no blocks")
        bad = next((i for i, key in enumerate(kv.block_keys) if not blocks.is_block_key(key)), None)
        if bad is not None:
            raise invalid(f"kv.block_keys[{bad}]", "must be a 32-character lowercase hex block key")
        if (
            not (len(kv.block_keys) - 1) * kv.block_tokens
            < kv.num_tokens
            <= len(kv.block_keys) * kv.block_tokens
        ):
            raise invalid(
                "kv.num_tokens",
                f"{kv.num_tokens} does not fit {len(kv.block_keys)} blocks of {kv.block_tokens}",
            )
        if not is_valid_token(request.first_token):
            raise invalid("first_token", "outside the vocabulary")
        if not 1 <= request.max_tokens <= reservation.num_kv_tokens:
            raise invalid("max_tokens", "must be >= 1 and within the reservation")
        reply = await self.pool.get(list(kv.block_keys))
        if reply.missing_keys:
            raise FailedPreconditionError(
                f"kv: {len(reply.missing_keys)} of {len(kv.block_keys)} blocks are gone from the pool",
                field="kv",
            )
        token_blocks = [list(b.tokens) for b in reply.blocks]
        if not blocks.verify_chain(kv.block_keys, token_blocks, kv.block_tokens):
            raise FailedPreconditionError("kv: blocks do not match their prefix-chained keys", field="kv")
        prompt = [t for block in token_blocks for t in block]
        if len(prompt) != kv.num_tokens:
            raise invalid("kv.num_tokens", f"handle says {kv.num_tokens}, blocks hold {len(prompt)}")
        die = self._die(reservation.dp_rank).index
        result = await self.fabric.transfer(
            ("die", kv.prefill_die), ("die", die), kv.nominal_bytes, "rdma", "p2d"
        )
        pull_s = result.duration_s
        model = await asyncio.to_thread(
            TokenModel, [*prompt, request.first_token], request.sampling.seed, eos_plan(request.sampling)
        )
        seq = self.scheduler.new_seq(
            reservation,
            model,
            request.max_tokens,
            request.sampling.seed,
            frozenset(request.sampling.stop_token_ids),
            request.sampling.ignore_eos,
        )
        return seq, pull_s

    def _die(self, dp_rank: int) -> common_pb2.Die:
        if not self.lease.dies:
            raise UnavailableError("decode holds no dies (fabric lease missing)")
        return self.lease.dies[dp_rank % len(self.lease.dies)]

    async def _expire_reservations(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for rid, (reservation, deadline) in list(self._pending.items()):
                if deadline < now:
                    log.warning("reservation for %s expired unused", reservation.request_id)
                    self._pending.pop(rid, None)
                    self.scheduler.release(reservation.request_id)


def build(
    settings: Settings,
    clock: Clock | None = None,
    fabric: FabricClient | None = None,
    pool: PoolClient | None = None,
) -> Callable[[grpc.aio.Server, Drain], DecodeService]:
    """The host's factory; tests pass a virtual clock and in-memory peers."""
    return worker_builder(
        DecodeService, decode_pb2_grpc.add_DecodeServicer_to_server, settings, clock, fabric, pool
    )
