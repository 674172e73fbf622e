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
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from supernode.core import blocks, policy, tokens
from supernode.core.request import Request, RequestStatus, Sampling
from supernode.router.workers import Worker, WorkerSet
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    ResourceExhaustedError,
    SupernodeError,
    UnavailableError,
    invalid,
)
from supernode.runtime.peers import DecodeChunk, DecodePeer, PrefillPeer, PrefillResult, Reservation

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputChunk:
    token_ids: list[int]  # tokens for the caller (empty when only counted)
    num_tokens: int  # how many tokens this chunk carries


class RouterEngine:
    def __init__(
        self, settings: Settings, clock: Clock, prefills: Sequence[PrefillPeer], decodes: Sequence[DecodePeer]
    ) -> None:
        self.cfg = settings.router
        self.block_tokens = settings.kvpool.block_tokens
        self.time_scale = settings.runtime.time_scale  # settings in wall seconds -> emulated
        self.clock = clock
        self.workers = WorkerSet(prefills, decodes, clock, self.cfg.load_poll_s * self.time_scale)
        self.num_inflight = 0
        self._rr = itertools.count()
        self.affinity = policy.AffinityTable(self.cfg.max_affinity_entries)  # used by the kv_aware policy

    def start(self) -> None:
        self.workers.start()

    async def stop(self) -> None:
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
            run = self._run(request, on_dispatch)
            if deadline_s > 0:
                run = self._with_deadline(run, deadline_s)
            async with contextlib.aclosing(run) as chunks:
                async for chunk in chunks:
                    yield chunk
        except SupernodeError as err:
            request.end(RequestStatus.FAILED, err.message)
            raise
        finally:
            self.num_inflight -= 1
            request.end(RequestStatus.CANCELLED, "cancelled")  # a no-op once finished or failed

    # -- the request path

    async def _run(
        self, request: Request, on_dispatch: Callable[[], None] | None
    ) -> AsyncGenerator[OutputChunk, None]:
        request.arrival_s = self.clock.now()
        for attempt in range(2):
            # A one-token request ends with its prefill: it needs no decode capacity, nor two RPCs.
            booked = await self._reserve(request) if request.max_tokens > 1 else None
            if on_dispatch is not None:
                on_dispatch()
            is_done = False  # set once the decode stream finished: the decode side released its capacity
            try:
                request.advance(RequestStatus.PREFILLING)
                await self._prefill(request)
                if attempt == 0:  # a recomputed prefill gives the same first token: send it once
                    request.first_token_s = self.clock.now()
                    request.num_generated = 1
                    request.output.append(request.first_token)
                    yield OutputChunk([request.first_token], 1)
                if request.max_tokens == 1 or request.first_token in request.sampling.stop_token_ids:
                    request.finish_reason = "length" if request.max_tokens == 1 else "stop"
                    break
                assert booked is not None  # reserved: max_tokens > 1
                decode_worker, reservation = booked
                request.advance(RequestStatus.TRANSFERRING)
                request.decode_worker = decode_worker.address
                decoding = self._decode(decode_worker, reservation, request)
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
                # The prompt's KV left the pool between prefill and decode (LRU eviction, a Redis
                # restart): recompute it once rather than answer from anything else.
                if attempt == 1 or request.num_generated > 1 or not err.message.startswith("kv:"):
                    raise
                log.warning("KV of %s lost before decode (%s); recomputing", request.request_id, err.message)
            finally:
                # Prefill failed, no decode was needed, or the caller left before decode finished
                # (perhaps before the decode call reached the worker): give the capacity back now
                # rather than when the reservation expires. Cancelling a reservation the worker has
                # already taken up is a no-op there.
                if not is_done and booked is not None:
                    await self._cancel(*booked)
        request.finished_s = self.clock.now()
        request.advance(RequestStatus.FINISHED)

    async def _reserve(self, request: Request) -> tuple[Worker[DecodePeer], Reservation]:
        """Reserves decode KV capacity, waiting while every instance is full (the "wait" policy: a
        request is queued here, never dropped, until capacity frees or `reserve_wait_s` passes)."""
        deadline = self.clock.now() + self.cfg.reserve_wait_s * self.time_scale
        backoff = 0.02 * self.time_scale
        while True:
            try:
                return await self._reserve_once(request)
            except ResourceExhaustedError:
                if self.clock.now() + backoff > deadline:
                    raise
                await self.clock.sleep(backoff)
                backoff = min(0.5 * self.time_scale, backoff * 2)

    async def _reserve_once(self, request: Request) -> tuple[Worker[DecodePeer], Reservation]:
        workers = self.workers.decode
        need = request.num_prompt_tokens + request.max_tokens
        last: SupernodeError = UnavailableError("no decode instance is available", retry_after_s=1.0)
        for i in policy.decode_order([w.snapshot() for w in workers], need):
            worker = workers[i]
            try:
                reservation = await worker.peer.reserve(request.request_id, request.num_prompt_tokens,
                                                        request.max_tokens)  # fmt: skip
                return worker, reservation
            except (UnavailableError, ResourceExhaustedError) as err:
                worker.on_error(err)
                last = err
        raise last

    async def _prefill(self, request: Request) -> None:
        """Prefills on the policy's choice, skipping instances that refuse; fills the record."""
        workers = self.workers.prefill
        prefix = blocks.block_keys(request.prompt[: self.block_tokens], self.block_tokens)[0]
        order = policy.prefill_order(
            [w.snapshot() for w in workers], self.cfg.policy, next(self._rr), self.affinity.get(prefix)
        )
        last: SupernodeError = UnavailableError("no prefill instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            worker.num_inflight += 1
            try:
                result = await worker.peer.prefill(request.request_id, request.prompt, request.sampling)
            except (UnavailableError, ResourceExhaustedError) as err:
                worker.on_error(err)
                last = err
                continue
            finally:
                worker.num_inflight -= 1
            self.affinity.put(prefix, i)
            _record_prefill(request, worker.address, result)
            return
        raise last

    async def _decode(
        self, worker: Worker[DecodePeer], reservation: Reservation, request: Request
    ) -> AsyncGenerator[DecodeChunk, None]:
        assert request.kv is not None
        worker.num_inflight += 1
        chunks = worker.peer.decode(
            reservation.reservation_id, request.kv, request.first_token, request.max_tokens, request.sampling
        )
        try:
            async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                async for chunk in chunks:
                    yield chunk
        except SupernodeError as err:
            worker.on_error(err)
            raise
        finally:
            worker.num_inflight -= 1

    async def _cancel(self, worker: Worker[DecodePeer], reservation: Reservation) -> None:
        try:
            await worker.peer.cancel_reservation(reservation.reservation_id)
        except SupernodeError as err:
            log.warning("could not cancel reservation on %s: %s", worker.address, err.code)

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
            raise DeadlineExceededError("deadline_s: the request did not finish within its deadline") from err

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
