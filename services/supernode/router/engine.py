"""The router's engine: validates, schedules prefill and decode, relays tokens (the paper's flow).

A request's states here (core/request.py):
1. QUEUED: validated and tokenized, waiting for KV capacity on a decode instance (`reserve` first: the
   paper's asynchronous prefill scheduling, so decode never waits on an unplanned prefill); while every
   instance is full it waits, bounded by `router.reserve_wait_s`;
2. PREFILLING on the least-loaded prefill instance (the policy's choice), which answers with the first
   token and a KvHandle; the first token is yielded at once (TTFT);
3. TRANSFERRING while the decode instance pulls the KV, then DECODING as its tokens are relayed;
4. FINISHED (stats complete on the record), FAILED (a domain error is raised) or CANCELLED (the
   caller closed the stream: its reservation or decode slot is given back at once).
Retry and recompute live here: an instance that refuses (UNAVAILABLE, RESOURCE_EXHAUSTED) is skipped
for the next one; if decode finds the prompt's KV gone from the pool, the prompt is prefilled again
once (TRANSFERRING -> PREFILLING), never answered from anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from supernode.core import blocks, policy, tokens
from supernode.core.request import Request, RequestStatus, Sampling
from supernode.router import fault_metrics, resume
from supernode.router.watch import Watchdog
from supernode.router.workers import Worker, WorkerSet
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    ResourceExhaustedError,
    SupernodeError,
    UnavailableError,
    invalid,
)
from supernode.runtime.peers import (
    DecodeChunk,
    DecodePeer,
    FaultSource,
    PrefillPeer,
    PrefillResult,
    Reservation,
)  # fmt: skip

log = logging.getLogger(__name__)
_EXPIRED = "deadline_s: the request did not finish within its deadline"


@dataclass(frozen=True, slots=True)
class OutputChunk:
    token_ids: list[int]  # tokens for the caller (empty when only counted)
    num_tokens: int  # how many tokens this chunk carries


class RouterEngine:
    def __init__(
        self, settings: Settings, clock: Clock, prefills: Sequence[PrefillPeer],
        decodes: Sequence[DecodePeer], faults: FaultSource | None = None,
    ) -> None:  # fmt: skip
        """`faults`: where to learn which workers sit behind downed fabric links (None: nowhere)."""
        self.cfg = settings.router
        self.block_tokens = settings.kvpool.block_tokens
        self.time_scale = settings.runtime.time_scale  # settings in wall seconds -> emulated
        self.clock = clock
        self.workers = WorkerSet(
            prefills, decodes, clock, self.cfg.load_poll_s * self.time_scale, faults,
            self.cfg.fault_poll_s * self.time_scale,
        )  # fmt: skip
        tick_s = min(0.25, self.cfg.liveness_s / 4, self.cfg.call_timeout_s / 4) * self.time_scale
        self.watchdog = Watchdog(clock, tick_s)  # gives up on calls to workers that broke or froze
        self._background: set[asyncio.Task[None]] = set()  # reservations being cancelled
        self.num_inflight = 0
        self._rr = itertools.count()
        self.affinity = policy.AffinityTable(self.cfg.max_affinity_entries)  # used by the kv_aware policy

    def start(self) -> None:
        self.workers.start()

    async def stop(self) -> None:
        await self.watchdog.close()
        await self.workers.close()

    def make_request(
        self, request_id: str, prompt: str, token_ids: Sequence[int], max_tokens: int, sampling: Sampling
    ) -> Request:
        """Validates and tokenizes a request (`prompt` text xor `token_ids`); INVALID_ARGUMENT names
        the field and the rule."""
        if prompt and token_ids:
            raise invalid("prompt", "give either prompt or token_ids, not both")
        ids = list(token_ids) if token_ids else tokens.encode(prompt)
        if not ids:
            raise invalid("prompt", "must not be empty")
        bad = tokens.first_invalid_token(ids)
        if bad is not None:
            raise invalid("token_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
        if not 1 <= max_tokens <= self.cfg.max_tokens_limit:
            raise invalid("max_tokens", f"must be between 1 and {self.cfg.max_tokens_limit}")
        if len(ids) + max_tokens > self.cfg.max_context_tokens:
            raise invalid(
                "prompt",
                f"{len(ids)} prompt tokens + {max_tokens} max_tokens exceed the "
                f"{self.cfg.max_context_tokens}-token context window",
            )
        return Request(request_id or uuid.uuid4().hex, ids, max_tokens, sampling)

    async def generate(
        self, request: Request, deadline_s: float = 0.0, on_dispatch: Callable[[], None] | None = None
    ) -> AsyncGenerator[OutputChunk, None]:
        """Runs the request to its end, yielding its tokens; the record holds its stats afterwards.
        `deadline_s` (emulated, 0 = none) bounds it with DEADLINE_EXCEEDED; `on_dispatch` is called
        when it leaves the queue (decode capacity reserved). Closing the iterator early cancels it."""
        if deadline_s < 0:
            raise invalid("deadline_s", "must be >= 0")
        if self.num_inflight >= self.cfg.max_inflight:
            raise ResourceExhaustedError(
                f"router has {self.cfg.max_inflight} requests in flight", retry_after_s=0.5
            )
        self.num_inflight += 1
        try:
            deadline_at = self.clock.now() + deadline_s if deadline_s > 0 else math.inf
            run = self._run(request, on_dispatch, deadline_at)
            if deadline_s > 0:
                run = self._with_deadline(run, deadline_s)
            async with contextlib.aclosing(run) as chunks:
                async for chunk in chunks:
                    yield chunk
        except SupernodeError as err:
            if isinstance(err, DeadlineExceededError):
                fault_metrics.on_request_deadline(request.request_id)
            request.end(RequestStatus.FAILED, err.message)
            raise
        finally:
            self.num_inflight -= 1
            request.end(RequestStatus.CANCELLED, "cancelled")  # a no-op once finished or failed

    # -- the request path

    async def _run(
        self, request: Request, on_dispatch: Callable[[], None] | None, deadline_at: float
    ) -> AsyncGenerator[OutputChunk, None]:
        request.arrival_s = self.clock.now()
        failed_on: set[str] = set()  # decode instances that failed this request
        num_recomputes = 0
        while True:
            decode_worker, reservation = await self._reserve(request, failed_on, deadline_at)
            if on_dispatch is not None:
                on_dispatch()
                on_dispatch = None
            is_done = False  # set once the decode stream finished: the decode side released its capacity
            is_failed = False  # the attempt broke: give the reservation back in the background
            in_decode = False
            try:
                if request.kv is None:
                    self._to(request, RequestStatus.PREFILLING)
                    if request.num_generated == 0:
                        await self._prefill(request, deadline_at)
                        request.first_token_s = self.clock.now()
                        request.num_generated = 1
                        request.output.append(request.first_token)
                        yield OutputChunk([request.first_token], 1)
                    else:  # resuming: prompt + the tokens sent, but the last, which decode starts from
                        await self._prefill(request, deadline_at, resume.resume_prompt(request))
                request.finish_reason = resume.finish_reason_so_far(request)
                if request.finish_reason:
                    break
                self._to(request, RequestStatus.TRANSFERRING)
                request.decode_worker = decode_worker.address
                in_decode = True
                decoding = self._decode(decode_worker, reservation, request, deadline_at)
                async with contextlib.aclosing(decoding) as chunks:
                    async for chunk in chunks:
                        if chunk.finished:
                            request.finish_reason, is_done = chunk.finish_reason, True
                            break
                        if request.status is RequestStatus.TRANSFERRING:
                            request.advance(RequestStatus.DECODING)
                        request.kv_pull_s += chunk.kv_pull_s
                        request.num_generated += chunk.num_tokens
                        request.output.extend(chunk.token_ids)
                        yield OutputChunk(chunk.token_ids, chunk.num_tokens)
                break
            except FailedPreconditionError as err:
                is_failed = True
                # The KV left the pool between prefill and decode (LRU eviction, a Redis restart):
                # recompute it once rather than answer from anything else.
                if err.message.startswith("kv:") and num_recomputes == 0 and resume.can_resume(request):
                    num_recomputes += 1
                    request.num_prefills += 1
                    log.warning(
                        "KV of %s lost before decode (%s); recomputing", request.request_id, err.message
                    )
                    request.kv = None
                    continue
                if not (in_decode and err.field == "reservation_id"):  # an expired reservation: move on
                    raise
                self._migrate(request, decode_worker, err, failed_on, deadline_at)
            except (UnavailableError, DeadlineExceededError, InternalError) as err:
                is_failed = True
                if not in_decode:
                    raise
                request.finish_reason = resume.finish_reason_so_far(request)
                if request.finish_reason:  # the stream broke after its last token: nothing is lost
                    break
                self._migrate(request, decode_worker, err, failed_on, deadline_at)
            finally:
                # Prefill failed, no decode was needed, the stream broke, or the caller left before
                # decode finished (perhaps before the decode call reached the worker): give the
                # capacity back now rather than when the reservation expires. Cancelling a reservation
                # the worker has already taken up is a no-op there.
                if not is_done:
                    if is_failed and in_decode:  # its worker broke: do not wait for it
                        self._cancel_later(decode_worker, reservation)
                    else:
                        await self._cancel(decode_worker, reservation)
        request.finished_s = self.clock.now()
        request.advance(RequestStatus.FINISHED)

    def _migrate(
        self, request: Request, worker: Worker[DecodePeer], err: SupernodeError, failed_on: set[str],
        deadline_at: float,
    ) -> None:  # fmt: skip
        """Decides whether a broken decode continues elsewhere: raises `err` when it may not (its
        deadline passed, the bound is reached, or the tokens sent are not known), else notes it."""
        if self.clock.now() >= deadline_at:
            raise DeadlineExceededError(_EXPIRED) from err
        refusal = resume.refusal(request, self.cfg.max_migrations)
        if refusal:
            fault_metrics.on_migration_refused(request.request_id, refusal, err)
            raise err
        failed_on.add(worker.address)
        request.num_migrations += 1
        fault_metrics.on_migration(
            request.request_id, worker.address, err, request.num_generated, request.num_migrations
        )
        if request.num_generated > 1:  # the KV to resume from covers the tokens sent: prefill it
            request.kv = None

    def _to(self, request: Request, status: RequestStatus) -> None:
        """Moves to PREFILLING or TRANSFERRING, through PREFILLING when coming back from decoding."""
        if request.status is status:
            return
        if status is RequestStatus.TRANSFERRING and request.status is RequestStatus.DECODING:
            request.advance(RequestStatus.PREFILLING)
        request.advance(status)

    def _call_deadline(self, bound_s: float, deadline_at: float) -> float:
        """The emulated instant a call gives up at: its bound (wall seconds) or the request's deadline."""
        return min(self.clock.now() + bound_s * self.time_scale, deadline_at)

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

    async def _reserve(
        self, request: Request, failed_on: set[str], deadline_at: float
    ) -> tuple[Worker[DecodePeer], Reservation]:
        """Reserves decode KV capacity, waiting while every instance is full (the "wait" policy: a
        request is queued here, never dropped, until capacity frees or `reserve_wait_s` passes)."""
        deadline = min(self.clock.now() + self.cfg.reserve_wait_s * self.time_scale, deadline_at)
        backoff = 0.02 * self.time_scale
        while True:
            try:
                return await self._reserve_once(request, failed_on, deadline_at)
            except ResourceExhaustedError:
                if self.clock.now() + backoff > deadline:
                    raise
                await self.clock.sleep(backoff)
                backoff = min(0.5 * self.time_scale, backoff * 2)

    async def _reserve_once(
        self, request: Request, failed_on: set[str], deadline_at: float
    ) -> tuple[Worker[DecodePeer], Reservation]:
        workers = self.workers.decode
        num_prompt, num_left = resume.reservation_size(request)
        order = self._order(workers, lambda snaps: policy.decode_order(snaps, num_prompt + num_left))
        order = [i for i in order if workers[i].address not in failed_on] + [
            i
            for i in order
            if workers[i].address in failed_on  # only when nothing else will do
        ]
        last: SupernodeError = UnavailableError("no decode instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            call = worker.peer.reserve(request.request_id, num_prompt, num_left)
            try:
                deadline = self._call_deadline(self.cfg.call_timeout_s, deadline_at)
                return worker, await self.watchdog.call(worker, call, "reserve", deadline)
            except (UnavailableError, ResourceExhaustedError, DeadlineExceededError) as err:
                worker.on_error(err)
                if not isinstance(err, ResourceExhaustedError):
                    fault_metrics.on_call_failed("reserve", worker.address, err)
                last = err
        raise last

    async def _prefill(self, request: Request, deadline_at: float, resumed: list[int] | None = None) -> None:
        """Prefills on the policy's choice, skipping instances that refuse, fail, stop answering or
        pass the call's deadline; fills the record (`resumed`: a migrated request's prompt + output)."""
        workers = self.workers.prefill
        prefix = blocks.block_keys(request.prompt[: self.block_tokens], self.block_tokens)[0]
        order = self._order(workers, lambda snaps: policy.prefill_order(
            snaps, self.cfg.policy, next(self._rr), self.affinity.get(prefix)
        ))  # fmt: skip
        last: SupernodeError = UnavailableError("no prefill instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            worker.num_inflight += 1
            call = worker.peer.prefill(request.request_id, resumed or request.prompt, request.sampling)
            try:
                deadline = self._call_deadline(self.cfg.prefill_timeout_s, deadline_at)
                result = await self.watchdog.call(worker, call, "prefill", deadline)
            except (UnavailableError, ResourceExhaustedError, DeadlineExceededError, InternalError) as err:
                worker.on_error(err)
                if not isinstance(err, ResourceExhaustedError):
                    fault_metrics.on_call_failed("prefill", worker.address, err)
                if self.clock.now() >= deadline_at:
                    raise DeadlineExceededError(_EXPIRED) from err
                last = err
                continue
            finally:
                worker.num_inflight -= 1
            self.affinity.put(prefix, i)
            if resumed is None:
                _record_prefill(request, worker.address, result)
            else:
                resume.record_resumed_prefill(request, result)
            return
        raise last

    async def _decode(
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
            worker, chunks, "decode", deadline_at, self.cfg.liveness_s * self.time_scale
        )
        try:
            async for chunk in watch:
                yield chunk
        except SupernodeError as err:
            worker.on_error(err)
            fault_metrics.on_call_failed("decode", worker.address, err)
            raise
        finally:
            await watch.aclose()
            worker.num_inflight -= 1

    async def _cancel(self, worker: Worker[DecodePeer], reservation: Reservation) -> None:
        try:
            await worker.peer.cancel_reservation(reservation.reservation_id)
        except SupernodeError as err:
            log.warning("could not cancel reservation on %s: %s", worker.address, err.code)

    def _cancel_later(self, worker: Worker[DecodePeer], reservation: Reservation) -> None:
        """Cancels in the background: a worker that broke may take its call timeout to answer."""
        task = asyncio.create_task(self._cancel(worker, reservation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _with_deadline(
        self, run: AsyncGenerator[OutputChunk, None], deadline_s: float
    ) -> AsyncGenerator[OutputChunk, None]:
        """Bounds `run` by `deadline_s` emulated seconds, on this engine's clock."""
        try:
            async with asyncio.timeout(None) as scope:
                timer = asyncio.create_task(self._expire(scope, deadline_s))
                try:
                    async with contextlib.aclosing(run) as chunks:  # type: ignore[type-var]
                        async for chunk in chunks:
                            yield chunk
                finally:
                    timer.cancel()
        except TimeoutError as err:
            raise DeadlineExceededError(_EXPIRED) from err

    async def _expire(self, scope: asyncio.Timeout, deadline_s: float) -> None:
        await self.clock.sleep(deadline_s)
        scope.reschedule(asyncio.get_running_loop().time())


def _record_prefill(request: Request, address: str, result: PrefillResult) -> None:
    request.num_prefills += 1
    request.prefill_worker = address
    request.first_token, request.kv = result.first_token, result.kv
    request.num_cached_tokens = result.num_cached_tokens
    request.prefill_queue_s, request.cache_load_s = result.queue_s, result.load_s
    request.prefill_compute_s = result.compute_s
