"""The router's calls to its workers, each under watch (router/watch.py): reserving decode capacity,
prefilling and decoding, on the instances the routing policy picks.

Every call has a deadline: its own bound (`router.call_timeout_s` for reserve, `prefill_timeout_s`
for a prefill) or the request's, whichever comes first; a call whose worker goes down is given up at
once, and a decode stream silent for `router.liveness_s` between chunks (`prefill_timeout_s` before
its first) too. An instance that refuses, fails or is
given up on is skipped for the next one in the policy's order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

from supernode.core import blocks, policy
from supernode.core.request import Request
from supernode.router import fault_metrics, resume
from supernode.router.watch import Watchdog
from supernode.router.workers import Worker, WorkerSet
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.early_first import FirstTokenOffer
from supernode.runtime.errors import (
    DeadlineExceededError,
    InternalError,
    ResourceExhaustedError,
    SupernodeError,
    UnavailableError,
)
from supernode.runtime.peers import DecodeChunk, DecodePeer, PrefillResult, Reservation

log = logging.getLogger(__name__)
EXPIRED = "deadline_s: the request did not finish within its deadline"


class WorkerCalls:
    def __init__(self, settings: Settings, clock: Clock, workers: WorkerSet) -> None:
        self.cfg = settings.router
        self.block_tokens = settings.kvpool.block_tokens
        self.time_scale = settings.runtime.time_scale  # settings in wall seconds -> emulated
        self.clock = clock
        self.workers = workers
        tick_s = min(0.25, self.cfg.liveness_s / 4, self.cfg.call_timeout_s / 4) * self.time_scale
        self.watchdog = Watchdog(clock, tick_s)  # gives up on calls to workers that broke or froze
        self._background: set[asyncio.Task[None]] = set()  # reservations being cancelled
        self._rr = itertools.count()
        self.affinity = policy.AffinityTable(self.cfg.max_affinity_entries)  # used by the kv_aware policy

    def _call_deadline(self, bound_s: float, deadline_at: float) -> float:
        """The emulated instant a call gives up at: its bound (emulated s) or the request's deadline."""
        return min(self.clock.now() + bound_s, deadline_at)

    def _order(
        self, workers: Sequence[Worker[Any]], select: Callable[[list[policy.WorkerSnapshot]], list[int]]
    ) -> list[int]:
        """The policy's order over available instances; when none is available (all unhealthy or
        behind faults), over all of them rather than none."""
        snapshots = policy.mark_behind_faults([w.snapshot() for w in workers], self.workers.behind_faults)
        order = select(snapshots)
        if not order:
            order = select([replace(w, is_healthy=True, is_behind_fault=False) for w in snapshots])
        return order

    async def reserve(
        self, request: Request, failed_on: set[str], deadline_at: float
    ) -> tuple[Worker[DecodePeer], Reservation]:
        """Reserves decode KV capacity, waiting while every instance is full (the "wait" policy: a
        request is queued here, never dropped, until capacity frees or `reserve_wait_s` passes)."""
        deadline = min(self.clock.now() + self.cfg.reserve_wait_s * self.time_scale, deadline_at)
        backoff = 0.02 * self.time_scale
        while True:
            asked_s = self.clock.now()
            try:
                booked = await self._reserve_once(request, failed_on, deadline_at)
                # Granted on this attempt: the reservation is bookkeeping, instant in the paper's
                # system, so the prefill counts from the attempt rather than from when its answer
                # crossed the host (a wait for capacity before it still counts).
                request.sent_s = asked_s
                return booked
            except (ResourceExhaustedError, UnavailableError, DeadlineExceededError) as err:
                # Full, or too busy to answer in time: wait and ask again, as for a full instance.
                retry = isinstance(err, ResourceExhaustedError) or _is_slow(err)
                if not retry or self.clock.now() + backoff > deadline or self.clock.now() >= deadline_at:
                    raise
                await self.clock.sleep(backoff)
                backoff = min(0.5 * self.time_scale, backoff * 2)

    async def _reserve_once(
        self, request: Request, failed_on: set[str], deadline_at: float
    ) -> tuple[Worker[DecodePeer], Reservation]:
        workers = self.workers.decode
        num_prompt, num_left = resume.reservation_size(request)
        order = self._order(workers, lambda snaps: policy.decode_order(snaps, num_prompt + num_left))
        # An instance this request failed on comes last: only when nothing else will do.
        order = sorted(order, key=lambda i: workers[i].address in failed_on)
        last: SupernodeError = UnavailableError("no decode instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            call = worker.peer.reserve(request.request_id, num_prompt, num_left)
            # Counted from the moment it is asked for: requests sent together then spread out.
            worker.kv_pending += num_prompt + num_left
            try:
                deadline = self._call_deadline(self.cfg.call_timeout_s * self.time_scale, deadline_at)
                return worker, await self.watchdog.call(worker, call, "reserve", deadline)
            except (UnavailableError, ResourceExhaustedError, DeadlineExceededError) as err:
                worker.kv_pending = max(0, worker.kv_pending - num_prompt - num_left)
                # A slow answer to a short call says the instance is busy, not gone: its load probe
                # decides that (a burst at the paper's batch sizes can keep a live decode busy for
                # seconds, and marking it down would abandon every stream it is serving).
                if self.clock.now() < deadline_at and not _is_slow(err):
                    worker.on_error(err)
                if not isinstance(err, ResourceExhaustedError):
                    fault_metrics.on_call_failed("reserve", worker.address, err)
                last = err
        raise last

    async def prefill(
        self, request: Request, deadline_at: float, resumed: list[int] | None = None,
        on_first_token: FirstTokenOffer | None = None, avoid: Collection[str] = (),
    ) -> None:  # fmt: skip
        """Prefills on the policy's choice, skipping instances that refuse, fail, stop answering or
        pass the call's deadline; fills the record (`resumed`: a migrated request's prompt + output;
        `avoid`: worker ids tried only after every other instance).
        `on_first_token`: as PrefillPeer.prefill's (an instance tried after one that offered it offers
        the same token again: it is drawn from the prompt and seed); an instance that fails withdraws
        its offer, if its token was not yet due."""
        workers = self.workers.prefill
        # Only the kv_aware policy places by prefix: the others neither hash it nor remember it.
        prefix = None
        if self.cfg.policy == "kv_aware":
            prefix = blocks.block_keys(request.prompt[: self.block_tokens], self.block_tokens)[0]
        affinity = None if prefix is None else self.affinity.get(prefix)
        order = self._order(workers, lambda snaps: policy.prefill_order(
            snaps, self.cfg.policy, next(self._rr), affinity
        ))  # fmt: skip
        if avoid:
            order = sorted(order, key=lambda i: workers[i].load.worker_id in avoid)
        last: SupernodeError = UnavailableError("no prefill instance is available", retry_after_s=1.0)
        # The first attempt counts from its reservation's call when that was granted at once; a
        # retry on the next instance from when it is sent.
        sent_s, request.sent_s = request.sent_s or self.clock.now(), 0.0
        for i in order:
            worker = workers[i]
            worker.num_inflight += 1
            call = worker.peer.prefill(
                request.request_id, resumed or request.prompt, request.sampling, on_first_token, sent_s
            )
            try:
                deadline = self._call_deadline(self.cfg.prefill_timeout_s, deadline_at)
                result = await self.watchdog.call(worker, call, "prefill", deadline)
            except (UnavailableError, ResourceExhaustedError, DeadlineExceededError, InternalError) as err:
                if on_first_token is not None:
                    on_first_token.withdraw()
                if self.clock.now() < deadline_at:  # else the request's time ran out, not the worker
                    worker.on_error(err)
                if not isinstance(err, ResourceExhaustedError):
                    fault_metrics.on_call_failed("prefill", worker.address, err)
                if self.clock.now() >= deadline_at:
                    raise DeadlineExceededError(EXPIRED) from err
                last = err
                continue
            finally:
                worker.num_inflight -= 1
                sent_s = 0.0  # the next instance is sent it now
            if prefix is not None:
                self.affinity.put(prefix, i)
            if resumed is None:
                record_prefill(request, worker.address, result)
            else:
                resume.record_resumed_prefill(request, result)
            return
        raise last

    async def decode(
        self, worker: Worker[DecodePeer], reservation: Reservation, request: Request, deadline_at: float
    ) -> AsyncGenerator[DecodeChunk, None]:
        assert request.kv is not None
        worker.num_inflight += 1
        num_resumed = request.num_generated - 1
        first = request.output[-1] if num_resumed else request.first_token
        chunks = worker.peer.decode(
            reservation.reservation_id, request.kv, first, request.max_tokens - num_resumed,
            request.sampling, num_resumed,
        )  # fmt: skip
        watch = self.watchdog.stream(
            worker,
            chunks,
            "decode",
            deadline_at,
            self.cfg.liveness_s * self.time_scale,
            first_item_s=self.cfg.prefill_timeout_s,  # the KV pull and a wait for a batch slot come first
        )
        try:
            async for chunk in watch:
                yield chunk
        except SupernodeError as err:
            if self.clock.now() < deadline_at:
                worker.on_error(err)
            fault_metrics.on_call_failed("decode", worker.address, err)
            raise
        finally:
            await watch.aclose()
            worker.num_inflight -= 1

    async def cancel(self, worker: Worker[DecodePeer], reservation: Reservation) -> None:
        try:
            await worker.peer.cancel_reservation(reservation.reservation_id)
        except SupernodeError as err:
            log.warning("could not cancel reservation on %s: %s", worker.address, err.code)

    def cancel_later(self, worker: Worker[DecodePeer], reservation: Reservation) -> None:
        """Cancels in the background: a worker that broke may take its call timeout to answer."""
        task = asyncio.create_task(self.cancel(worker, reservation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def record_prefill(request: Request, address: str, result: PrefillResult) -> None:
    request.num_prefills += 1
    request.prefill_worker = address
    request.first_token, request.kv = result.first_token, result.kv
    request.num_cached_tokens = result.num_cached_tokens
    request.prefill_queue_s, request.cache_load_s = result.queue_s, result.load_s
    request.prefill_compute_s = result.compute_s


def _is_slow(err: SupernodeError) -> bool:
    """A call that passed its bound without an answer (as opposed to one refused or cut off)."""
    if getattr(err, "reason", "") == "deadline":  # watch.Abandoned: the router stopped waiting
        return True
    return isinstance(err, DeadlineExceededError) and not err.from_service
