"""The router gRPC service: protobuf <-> records around `RouterEngine` (router/engine.py).

A request's states (QUEUED -> PREFILLING -> TRANSFERRING -> DECODING -> FINISHED, FAILED or
CANCELLED), retries and recompute are the engine's. This module tokenizes text with the configured
tokenizer, receives chunked uploads, fits over-long prompts to the window (`long_context`: reject,
truncate or XL3M), plans the end of sequence, detokenizes for the client, and feeds the serving
metrics from the chunks as they pass.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc

from supernode.core import tokens
from supernode.core.request import Request
from supernode.core.tokenizer import Detokenizer
from supernode.router import long_context, prompt_source
from supernode.router.engine import OutputChunk, RouterEngine
from supernode.router.fabric_faults import GrpcFabricFaults
from supernode.router.long_context_metrics import LongContextMetrics
from supernode.router.prompt_source import PromptSource
from supernode.router.scoring_peers import PrefillPeers
from supernode.runtime import codec, tokenization
from supernode.runtime.clock import Clock, ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.errors import SupernodeError, invalid
from supernode.runtime.grpc_peers import GrpcDecodePeer, GrpcPrefillPeer
from supernode.runtime.metrics import RequestTracker, ServingMetrics, start_metrics_server
from supernode.runtime.server import Drain, stream, unary
from supernode.v1 import router_pb2, router_pb2_grpc


class RouterService(router_pb2_grpc.RouterServicer):
    service_names: tuple[str, ...] = (router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,)

    def __init__(
        self, settings: Settings, clock: Clock, drain: Drain, engine: RouterEngine | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.drain = drain
        self.engine = engine or RouterEngine(
            settings, clock,
            [GrpcPrefillPeer(a, settings) for a in settings.router.prefill_addresses],
            [GrpcDecodePeer(a, settings) for a in settings.router.decode_addresses],
            GrpcFabricFaults(settings),
        )  # fmt: skip
        self.metrics = ServingMetrics(settings.frontend.model_name)
        self.tokenizer = tokenization.tokenizer(settings)
        scorer = PrefillPeers(
            self.engine.workers, clock, settings.router.reserve_wait_s * settings.runtime.time_scale
        )
        self.long_context = long_context.LongContext(settings, clock, scorer)
        self.long_context_metrics = LongContextMetrics(self.metrics.registry)

    async def start(self) -> None:
        cfg = self.settings.router
        start_metrics_server(cfg.metrics_port, self.settings.runtime.bind_host, self.metrics.registry)
        self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    @stream()
    async def Generate(self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        prompt = self._tokenize(request)
        long_context.admit(len(prompt), request, self.settings)  # reject, or a policy for over-long prompts
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

    @unary(track=False)
    async def Status(self, request: router_pb2.StatusRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        await self.engine.workers.poll_once()
        return router_pb2.StatusResponse(
            workers=[
                router_pb2.WorkerStatus(
                    address=w.address, role=w.role, healthy=w.is_healthy, load=codec.load_to_pb(w.load),
                    num_inflight=w.num_inflight,
                )
                for w in self.engine.workers.all
            ]
        )  # fmt: skip

    # -- the request path

    async def _generate(
        self, request: router_pb2.GenerateRequest, source: PromptSource
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        request_id = request.request_id or uuid.uuid4().hex
        tracker = self.metrics.on_arrival()
        run = self.long_context.serve(
            request, request_id, source, lambda p: self._run(request, request_id, p, tracker),
            self.long_context_metrics,
        )  # fmt: skip
        try:
            async with contextlib.aclosing(run) as chunks:
                async for chunk in chunks:
                    if chunk.finished:
                        tracker.on_finish_stats(chunk.stats, chunk.finish_reason)
                    yield chunk
        except SupernodeError as err:
            tracker.on_error(err.code)
            raise
        except BaseException:
            tracker.on_error("CANCELLED")
            raise

    async def _run(
        self, request: router_pb2.GenerateRequest, request_id: str, prompt: list[int], tracker: RequestTracker
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        """The engine's run of `prompt` (the one actually served), as protobuf chunks."""
        # The end-of-sequence plan follows the prompt actually served (an XL3M splice, a truncation).
        tokenization.plan_request_eos(request, prompt, self.tokenizer.eos_token_id, self.settings)
        record = self.engine.make_request(
            request_id, "", prompt, request.max_tokens, codec.sampling_from_pb(request.sampling)
        )
        detok = self.tokenizer.detokenizer()
        started = last = self.clock.now()
        run = self.engine.generate(record, request.deadline_s, on_dispatch=tracker.on_start)
        async with contextlib.aclosing(run) as chunks:
            async for chunk in chunks:
                now = self.clock.now()
                if record.num_generated == chunk.num_tokens:  # the first chunk
                    tracker.on_first_token(now - started)
                else:
                    tracker.on_token(now - last, chunk.num_tokens)
                last = now
                yield self._chunk(record, chunk, detok)
        if record.num_prefills > 1:  # the KV was lost and the prompt computed again
            self.metrics.on_preemption()
        yield self._final(record, detok)

    def _tokenize(self, request: router_pb2.GenerateRequest) -> list[int]:
        """Prompt text (with the configured tokenizer) xor token ids; INVALID_ARGUMENT names the field."""
        if request.prompt and request.token_ids:
            raise invalid("prompt", "give either prompt or token_ids, not both")
        prompt = list(request.token_ids) if request.token_ids else self.tokenizer.encode(request.prompt)
        if not prompt:
            raise invalid("prompt", "must not be empty")
        bad = tokens.first_invalid_token(prompt)
        if bad is not None:
            raise invalid("token_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
        if not 1 <= request.max_tokens <= self.settings.router.max_tokens_limit:
            raise invalid("max_tokens", f"must be between 1 and {self.settings.router.max_tokens_limit}")
        if request.deadline_s < 0:
            raise invalid("deadline_s", "must be >= 0")
        return prompt

    @staticmethod
    def _chunk(record: Request, chunk: OutputChunk, detok: Detokenizer) -> router_pb2.GenerateChunk:
        return router_pb2.GenerateChunk(
            request_id=record.request_id, token_ids=chunk.token_ids, text=detok.feed(chunk.token_ids)
        )

    @staticmethod
    def _final(record: Request, detok: Detokenizer) -> router_pb2.GenerateChunk:
        stats = router_pb2.RequestStats(
            num_prompt_tokens=record.num_prompt_tokens,
            num_output_tokens=record.num_generated,
            num_cached_tokens=record.num_cached_tokens,
            ttft_s=record.ttft_s,
            tpot_s=record.tpot_s,
            e2e_s=record.e2e_s,
            prefill_queue_s=record.prefill_queue_s,
            prefill_compute_s=record.prefill_compute_s,
            cache_load_s=record.cache_load_s,
            kv_pull_s=record.kv_pull_s,
            prefill_worker=record.prefill_worker,
            decode_worker=record.decode_worker,
            num_migrations=record.num_migrations,
        )
        return router_pb2.GenerateChunk(
            request_id=record.request_id, text=detok.flush(), finished=True,
            finish_reason=record.finish_reason, stats=stats,
        )  # fmt: skip


def build(settings: Settings, clock: Clock | None = None, engine: RouterEngine | None = None):  # type: ignore[no-untyped-def]
    def _build(server: grpc.aio.Server, drain: Drain) -> RouterService:
        service = RouterService(settings, clock or ScaledClock(settings.runtime.time_scale), drain, engine)
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return service

    return _build
