"""The router: validates, schedules prefill and decode, streams tokens back (the paper's flow).

A request's states here:
1. validated and tokenized (the configured tokenizer, or token ids as given); unless it ignores EOS,
   its end-of-sequence is planned (`runtime.tokenization`);
2. KV capacity reserved on a decode instance first (`Decode.Reserve`; the paper's asynchronous
   prefill scheduling: decode never waits on an unplanned prefill);
3. the prompt sent to the least-loaded prefill instance, which answers with the first token and a
   KvHandle; the first token goes to the client at once (TTFT);
4. `Decode.Decode` streams the rest; chunks are relayed as they come;
5. the last chunk carries the request's stats: TTFT, TPOT, token counts, cached tokens (emulated time).
If the decode side finds the prompt KV gone from the pool, the prompt is prefilled again once
(recomputed, never answered wrongly). A failed instance is skipped for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from supernode.core import blocks, policy, tokens
from supernode.core.tokenizer import Detokenizer
from supernode.router import long_context, prompt_source
from supernode.router.long_context_metrics import LongContextMetrics
from supernode.router.prompt_source import PromptSource
from supernode.router.scoring_peers import PrefillPeers
from supernode.router.workers import Worker, WorkerSet
from supernode.runtime import tokenization
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    ResourceExhaustedError,
    SupernodeError,
    UnavailableError,
    from_rpc_error,
    invalid,
)
from supernode.runtime.metrics import RequestTracker, ServingMetrics, start_metrics_server
from supernode.runtime.server import Drain, stream, unary
from supernode.v1 import common_pb2, decode_pb2, prefill_pb2, router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)


class RouterService(router_pb2_grpc.RouterServicer):
    service_names = (router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,)

    def __init__(self, settings: Settings, clock: Clock, drain: Drain) -> None:
        self.settings = settings
        self.cfg = settings.router
        self.clock = clock
        self.drain = drain
        self.workers = WorkerSet(settings)
        self.num_inflight = 0
        self._rr = itertools.count()
        self.metrics = ServingMetrics(settings.frontend.model_name)
        self.affinity = policy.AffinityTable(self.cfg.max_affinity_entries)  # used by the kv_aware policy
        self.tokenizer = tokenization.tokenizer(settings)
        scorer = PrefillPeers(self.workers, settings.runtime.rpc_timeout_s, self.cfg.reserve_wait_s)
        self.long_context = long_context.LongContext(settings, clock, scorer)
        self.long_context_metrics = LongContextMetrics(self.metrics.registry)

    async def start(self) -> None:
        start_metrics_server(self.cfg.metrics_port, self.settings.runtime.bind_host, self.metrics.registry)
        self.workers.start()

    async def stop(self) -> None:
        await self.workers.close()

    @stream()
    async def Generate(self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        prompt = self._validate(request)
        async for chunk in self._generate(request, prompt_source.ListSource(prompt)):
            yield chunk

    @stream()
    async def GenerateUpload(  # noqa: N802
        self, request_iterator: AsyncIterator[router_pb2.UploadChunk], context: grpc.aio.ServicerContext
    ):
        request, source = await prompt_source.receive(request_iterator, self.settings, self.tokenizer.encode)
        try:  # the spool file goes however the request ends
            long_context.validate_header(request, source.num_tokens, self.settings)
            async for chunk in self._generate(request, source):
                yield chunk
        finally:
            source.close()

    async def _generate(
        self, request: router_pb2.GenerateRequest, source: PromptSource
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        request_id = request.request_id or uuid.uuid4().hex
        if self.num_inflight >= self.cfg.max_inflight:
            raise ResourceExhaustedError(
                f"router has {self.cfg.max_inflight} requests in flight", retry_after_s=0.5
            )
        self.num_inflight += 1
        tracker = self.metrics.on_arrival()
        try:
            run = self.long_context.serve(
                request, request_id, source, lambda p: self._run(request, request_id, p, tracker),
                self.long_context_metrics,
            )  # fmt: skip
            if request.deadline_s > 0:
                run = _with_deadline(run, request.deadline_s / self.settings.runtime.time_scale)
            async with contextlib.aclosing(self._observed(run, tracker)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except SupernodeError as err:
            tracker.on_error(err.code)
            raise
        except asyncio.CancelledError:
            tracker.on_error("CANCELLED")
            raise
        finally:
            self.num_inflight -= 1

    async def _observed(
        self, run: AsyncIterator[router_pb2.GenerateChunk], tracker: RequestTracker
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        """Feeds the serving metrics (vLLM names, emulated time) from the chunks as they pass."""
        started = last = self.clock.now()
        is_first = True
        async with contextlib.aclosing(run) as chunks:
            async for chunk in chunks:
                now = self.clock.now()
                if chunk.finished:
                    tracker.on_finish_stats(chunk.stats, chunk.finish_reason)
                elif is_first:
                    tracker.on_first_token(now - started)
                else:
                    tracker.on_token(now - last, len(chunk.token_ids))
                last, is_first = now, False
                yield chunk

    @unary(track=False)
    async def Status(self, request: router_pb2.StatusRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        await self.workers.poll_once()
        return router_pb2.StatusResponse(
            workers=[
                router_pb2.WorkerStatus(
                    address=w.address,
                    role=w.role,
                    healthy=w.is_healthy,
                    load=w.load,
                    num_inflight=w.num_inflight,
                )
                for w in self.workers.all
            ]
        )

    # -- the request path

    async def _run(
        self, request: router_pb2.GenerateRequest, request_id: str, prompt: list[int], tracker: RequestTracker
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        started = self.clock.now()
        # The end-of-sequence plan follows the prompt actually served (an XL3M splice, a truncation).
        tokenization.plan_request_eos(request, prompt, self.tokenizer.eos_token_id, self.settings)
        detok = self.tokenizer.detokenizer()
        num_output, finish_reason, kv_pull_s, first_at = 1, "length", 0.0, started
        for attempt in range(2):
            decode_worker, reservation = await self._reserve(request_id, len(prompt), request.max_tokens)
            tracker.on_start()
            is_done = False  # set once the decode stream finished: the decode side released its capacity
            try:
                prefill_worker, pre = await self._prefill(request_id, prompt, request.sampling)
                if attempt == 0:  # a recomputed prefill gives the same first token: send it once
                    first_at = self.clock.now()
                    yield self._chunk(request_id, [pre.first_token], detok)
                if request.max_tokens == 1 or pre.first_token in request.sampling.stop_token_ids:
                    finish_reason = "length" if request.max_tokens == 1 else "stop"
                    break
                decoding = self._decode(decode_worker, self._decode_request(request, reservation, pre))
                async with contextlib.aclosing(decoding) as chunks:
                    async for chunk in chunks:
                        if chunk.finished:
                            finish_reason, is_done = chunk.finish_reason, True
                            break
                        kv_pull_s += chunk.kv_pull_s
                        num_output += len(chunk.token_ids)
                        yield self._chunk(request_id, list(chunk.token_ids), detok)
                break
            except FailedPreconditionError as err:
                # The prompt's KV left the pool between prefill and decode (LRU eviction, a Redis
                # restart): recompute it once rather than answer from anything else.
                if attempt == 1 or num_output > 1 or not err.message.startswith("kv:"):
                    raise
                log.warning("KV of %s lost before decode (%s); recomputing", request_id, err.message)
                self.metrics.on_preemption()
            finally:
                # Prefill failed, no decode was needed, or the client left before decode finished
                # (perhaps before the Decode call reached the worker): give the capacity back now
                # rather than when the reservation expires. Cancelling a reservation the worker has
                # already taken up is a no-op there.
                if not is_done:
                    await self._cancel(decode_worker, reservation)
        finished_at = self.clock.now()
        stats = router_pb2.RequestStats(
            num_prompt_tokens=len(prompt),
            num_output_tokens=num_output,
            num_cached_tokens=pre.num_cached_tokens,
            ttft_s=first_at - started,
            tpot_s=(finished_at - first_at) / (num_output - 1) if num_output > 1 else 0.0,
            e2e_s=finished_at - started,
            prefill_queue_s=pre.queue_s,
            prefill_compute_s=pre.compute_s,
            cache_load_s=pre.load_s,
            kv_pull_s=kv_pull_s,
            prefill_worker=prefill_worker.address,
            decode_worker=decode_worker.address,
        )
        yield router_pb2.GenerateChunk(
            request_id=request_id, text=detok.flush(), finished=True, finish_reason=finish_reason, stats=stats
        )

    @staticmethod
    def _chunk(request_id: str, token_ids: list[int], detok: Detokenizer) -> router_pb2.GenerateChunk:
        return router_pb2.GenerateChunk(
            request_id=request_id, token_ids=token_ids, text=detok.feed(token_ids)
        )

    @staticmethod
    def _decode_request(
        request: router_pb2.GenerateRequest,
        reservation: decode_pb2.ReserveResponse,
        pre: prefill_pb2.PrefillResponse,
    ) -> decode_pb2.DecodeRequest:
        return decode_pb2.DecodeRequest(
            reservation_id=reservation.reservation_id,
            kv=pre.kv,
            first_token=pre.first_token,
            max_tokens=request.max_tokens,
            sampling=request.sampling,
        )

    async def _reserve(
        self, request_id: str, num_prompt: int, max_tokens: int
    ) -> tuple[Worker, decode_pb2.ReserveResponse]:
        """Reserves decode KV capacity, waiting while every instance is full (the "wait" policy: a
        request is queued here, never dropped, until capacity frees or `reserve_wait_s` passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.reserve_wait_s
        backoff = 0.02
        while True:
            try:
                return await self._reserve_once(request_id, num_prompt, max_tokens)
            except ResourceExhaustedError:
                if loop.time() + backoff > deadline:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(0.5, backoff * 2)

    async def _reserve_once(
        self, request_id: str, num_prompt: int, max_tokens: int
    ) -> tuple[Worker, decode_pb2.ReserveResponse]:
        workers = self.workers.decode
        order = policy.decode_order([w.snapshot() for w in workers], num_prompt + max_tokens)
        last: SupernodeError = UnavailableError("no decode instance is available", retry_after_s=1.0)
        for i in order:
            worker = workers[i]
            try:
                reply = await self._unary(
                    worker,
                    worker.stub.Reserve,
                    decode_pb2.ReserveRequest(  # type: ignore[attr-defined]
                        request_id=request_id, num_prompt_tokens=num_prompt, max_tokens=max_tokens
                    ),
                )
                return worker, reply
            except (UnavailableError, ResourceExhaustedError) as err:
                last = err
        raise last

    async def _prefill(
        self, request_id: str, prompt: list[int], sampling: common_pb2.Sampling
    ) -> tuple[Worker, prefill_pb2.PrefillResponse]:
        workers = self.workers.prefill
        prefix = blocks.block_keys(
            prompt[: self.settings.kvpool.block_tokens], self.settings.kvpool.block_tokens
        )[0]
        order = policy.prefill_order(
            [w.snapshot() for w in workers], self.cfg.policy, next(self._rr), self.affinity.get(prefix)
        )
        last: SupernodeError = UnavailableError("no prefill instance is available", retry_after_s=1.0)
        request = prefill_pb2.PrefillRequest(request_id=request_id, token_ids=prompt, sampling=sampling)
        for i in order:
            worker = workers[i]
            worker.num_inflight += 1
            try:
                reply = await self._unary(worker, worker.stub.Prefill, request, timeout_s=None)  # type: ignore[attr-defined]
                self.affinity.put(prefix, i)
                return worker, reply
            except (UnavailableError, ResourceExhaustedError) as err:
                last = err
            finally:
                worker.num_inflight -= 1
        raise last

    async def _decode(
        self, worker: Worker, request: decode_pb2.DecodeRequest
    ) -> AsyncIterator[decode_pb2.DecodeChunk]:
        worker.num_inflight += 1
        call = worker.stub.Decode(request)  # type: ignore[attr-defined]
        try:
            async for chunk in call:
                yield chunk
        except grpc.RpcError as err:
            raise _worker_error(worker, err) from err
        finally:
            call.cancel()  # a client that went away frees its decode slot now, not at garbage collection
            worker.num_inflight -= 1

    async def _unary(
        self, worker: Worker, rpc: object, request: object, timeout_s: float | None = -1
    ) -> object:
        timeout = self.settings.runtime.rpc_timeout_s if timeout_s == -1 else timeout_s
        try:
            return await rpc(request, timeout=timeout)  # type: ignore[operator]
        except grpc.RpcError as err:
            raise _worker_error(worker, err) from err

    async def _cancel(self, worker: Worker, reservation: decode_pb2.ReserveResponse) -> None:
        try:
            await worker.stub.CancelReservation(  # type: ignore[attr-defined]
                decode_pb2.CancelReservationRequest(reservation_id=reservation.reservation_id), timeout=5.0
            )
        except grpc.RpcError as err:
            log.warning("could not cancel reservation on %s: %s", worker.address, err.code())

    def _validate(self, request: router_pb2.GenerateRequest) -> list[int]:
        if request.prompt and request.token_ids:
            raise invalid("prompt", "give either prompt or token_ids, not both")
        prompt = list(request.token_ids) if request.token_ids else self.tokenizer.encode(request.prompt)
        if not prompt:
            raise invalid("prompt", "must not be empty")
        bad = next((t for t in prompt if not tokens.is_valid_token(t)), None)
        if bad is not None:
            raise invalid("token_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
        if not 1 <= request.max_tokens <= self.cfg.max_tokens_limit:
            raise invalid("max_tokens", f"must be between 1 and {self.cfg.max_tokens_limit}")
        long_context.admit(len(prompt), request, self.settings)  # reject, or a policy for over-long prompts
        if request.deadline_s < 0:
            raise invalid("deadline_s", "must be >= 0")
        return prompt


def _worker_error(worker: Worker, err: grpc.RpcError) -> SupernodeError:
    """The domain error of a failed worker call; a worker that could not be reached is marked down
    until the next load probe (an UNAVAILABLE the worker itself answered, e.g. a fabric fault on its
    path, says nothing about the worker)."""
    domain = from_rpc_error(err)
    if isinstance(domain, UnavailableError) and not domain.from_service:
        worker.is_healthy = False
    return domain


async def _with_deadline(
    run: AsyncIterator[router_pb2.GenerateChunk], wall_s: float
) -> AsyncIterator[router_pb2.GenerateChunk]:
    try:
        async with asyncio.timeout(wall_s), contextlib.aclosing(run) as chunks:
            async for chunk in chunks:
                yield chunk
    except TimeoutError as err:
        raise DeadlineExceededError("deadline_s: the request did not finish within its deadline") from err


def build(settings: Settings, clock: Clock | None = None):  # type: ignore[no-untyped-def]
    def _build(server: grpc.aio.Server, drain: Drain) -> RouterService:
        service = RouterService(settings, clock or ScaledClock(settings.runtime.time_scale), drain)
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return service

    return _build
