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
Retry, recompute and migration live here: an instance that refuses (UNAVAILABLE, RESOURCE_EXHAUSTED),
fails, stops answering or passes a call's deadline is skipped for the next one (router/calls.py); if
decode finds the prompt's KV gone from the pool, the prompt is prefilled again once (TRANSFERRING ->
PREFILLING), never answered from anything else. A decode stream that breaks (its worker killed,
drained, frozen past `router.liveness_s`, or cut off from the fabric) moves to another instance, at
most `router.max_migrations` times: the prompt and the tokens already sent are prefilled there (the
pool usually holds the prompt's blocks) and decoding resumes from the last token sent, so the caller
gets the fault-free stream (router/resume.py). DECODING -> PREFILLING -> TRANSFERRING -> DECODING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from array import array
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from supernode.core import tokens
from supernode.core.request import KV_UNREACHABLE, Request, RequestStatus, Sampling
from supernode.router import fault_metrics, resume
from supernode.router.calls import EXPIRED, WorkerCalls
from supernode.router.workers import Worker, WorkerSet
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.early_first import EarlyFirst
from supernode.runtime.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    ResourceExhaustedError,
    SupernodeError,
    UnavailableError,
    invalid,
)
from supernode.runtime.peers import DecodePeer, FaultSource, PrefillPeer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputChunk:
    token_ids: list[int]  # tokens for the caller (empty when only counted)
    num_tokens: int  # how many tokens this chunk carries


class RouterEngine:
    def __init__(
        self, settings: Settings, clock: Clock, prefills: Sequence[PrefillPeer],
        decodes: Sequence[DecodePeer], faults: FaultSource | None = None, peers_are_local: bool = False,
    ) -> None:  # fmt: skip
        """`faults`: where to learn which workers sit behind downed fabric links (None: nowhere);
        `peers_are_local`: the peers are in-process engines, which answer without waiting."""
        self.cfg = settings.router
        self.time_scale = settings.runtime.time_scale  # settings in wall seconds -> emulated
        self.clock = clock
        self.workers = WorkerSet(
            prefills, decodes, clock, self.cfg.load_poll_s * self.time_scale, faults,
            self.cfg.fault_poll_s * self.time_scale, probe_in_turn=peers_are_local,
        )  # fmt: skip
        self.calls = WorkerCalls(settings, clock, self.workers)
        self.num_inflight = 0

    def start(self) -> None:
        self.workers.start()

    async def stop(self) -> None:
        await self.calls.watchdog.close()
        await self.workers.close()

    def make_request(
        self, request_id: str, prompt: str, token_ids: Sequence[int], max_tokens: int, sampling: Sampling
    ) -> Request:
        """Validates and tokenizes a request (`prompt` text xor `token_ids`); INVALID_ARGUMENT names
        the field and the rule."""
        if prompt and token_ids:
            raise invalid("prompt", "give either prompt or token_ids, not both")
        # Validated as given (an array of 32-bit ids is checked in place), then copied to a list.
        given: Sequence[int] = token_ids if len(token_ids) else tokens.encode(prompt)
        if not len(given):
            raise invalid("prompt", "must not be empty")
        bad = tokens.first_invalid_token(given)
        if bad is not None:
            raise invalid("token_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
        if not 1 <= max_tokens <= self.cfg.max_tokens_limit:
            raise invalid("max_tokens", f"must be between 1 and {self.cfg.max_tokens_limit}")
        # A 32-bit array stays one (its bytes copied, not an int object made per id): prefill then
        # validates, hashes and searches it without converting it; anything else becomes a list.
        ids = tokens.packed_ids(given) if isinstance(given, array) else list(given)
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
        unreachable: set[str] = set()  # prefill worker ids whose KV for it could not be pulled
        num_recomputes = 0
        while True:
            # A one-token request ends with its prefill: it needs no decode capacity, nor two RPCs.
            booked = (
                await self.calls.reserve(request, failed_on, deadline_at) if request.max_tokens > 1 else None
            )
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
                        # The first token goes out once computed; the prompt's blocks are stored after.
                        # Held until due: a live prefill offers it when its batch starts.
                        call = EarlyFirst(
                            lambda offer: self.calls.prefill(request, deadline_at, None, offer), self.clock
                        )
                        try:
                            first = await call.first_token()
                            if first is not None:
                                # A held token counts from its due instant: the hold's wake-up
                                # (the event loop's timer granularity, ~1 ms) is the host's time.
                                at = call.due_s if call.was_held else self.clock.now()
                                yield self._first(request, first, at)
                            await call.result()
                        finally:
                            call.cancel()
                        if request.num_generated == 0:  # a peer that only answers at the end
                            yield self._first(request, request.first_token, self.clock.now())
                    else:  # resuming: prompt + the tokens sent, but the last, which decode starts from
                        await self.calls.prefill(
                            request, deadline_at, resume.resume_prompt(request), avoid=unreachable
                        )
                request.finish_reason = resume.finish_reason_so_far(request)
                if request.finish_reason:
                    break
                assert booked is not None  # reserved: max_tokens > 1
                decode_worker, reservation = booked
                self._to(request, RequestStatus.TRANSFERRING)
                request.decode_worker = decode_worker.address
                in_decode = True
                decoding = self.calls.decode(decode_worker, reservation, request, deadline_at)
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
                    if request.kv is not None and err.message.startswith(KV_UNREACHABLE):
                        unreachable.add(request.kv.prefill_worker)  # recompute it on another one
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
                if not is_done and booked is not None:
                    if is_failed and in_decode:  # its worker broke: do not wait for it
                        self.calls.cancel_later(*booked)
                    else:
                        await self.calls.cancel(*booked)
        request.finished_s = self.clock.now()
        request.advance(RequestStatus.FINISHED)

    def _first(self, request: Request, token: int, at_s: float) -> OutputChunk:
        request.first_token_s = at_s
        request.num_generated = 1
        request.output.append(token)
        return OutputChunk([token], 1)

    def _migrate(
        self, request: Request, worker: Worker[DecodePeer], err: SupernodeError, failed_on: set[str],
        deadline_at: float,
    ) -> None:  # fmt: skip
        """Decides whether a broken decode continues elsewhere: raises `err` when it may not (its
        deadline passed, the bound is reached, or the tokens sent are not known), else notes it."""
        if self.clock.now() >= deadline_at:
            raise DeadlineExceededError(EXPIRED) from err
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

    async def _with_deadline(
        self, run: AsyncGenerator[OutputChunk, None], deadline_s: float
    ) -> AsyncGenerator[OutputChunk, None]:
        """Bounds `run` by `deadline_s` emulated seconds, on this engine's clock."""
        try:
            async with asyncio.timeout(None) as scope:
                timer = asyncio.create_task(self._expire(scope, deadline_s))
                try:
                    async with contextlib.aclosing(run) as chunks:
                        async for chunk in chunks:
                            yield chunk
                finally:
                    timer.cancel()
        except TimeoutError as err:
            raise DeadlineExceededError(EXPIRED) from err

    async def _expire(self, scope: asyncio.Timeout, deadline_s: float) -> None:
        await self.clock.sleep(deadline_s)
        scope.reschedule(asyncio.get_running_loop().time())
