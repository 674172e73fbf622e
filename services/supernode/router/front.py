"""What the router does at its edge, around the engine: the request as the client gave it in, the
tokens and stats back out.

A request's path here: its prompt text is tokenized with the configured tokenizer (or its token ids
taken as they are) and checked; an over-long prompt is fitted to the window by its long-context policy
(`long_context`: reject, truncate or XL3M); the end-of-sequence plan is made for the prompt actually
served; then `RouterEngine` runs it (states QUEUED -> ... -> FINISHED, FAILED or CANCELLED, retries and
recompute are the engine's) while the serving metrics are fed from the chunks as they pass and the
tokens are detokenized for the client. The gRPC codec (`service.py`) only translates.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from supernode.core import tokens
from supernode.router import long_context
from supernode.router import wire as router_wire
from supernode.router.engine import RouterEngine
from supernode.router.long_context_metrics import LongContextMetrics
from supernode.router.prompt_source import PromptSource
from supernode.router.scoring_peers import PrefillPeers
from supernode.runtime import codec, tokenization
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.errors import SupernodeError, invalid
from supernode.runtime.metrics import RequestTracker, ServingMetrics
from supernode.v1 import router_pb2


class RouterFront:
    def __init__(self, settings: Settings, clock: Clock, engine: RouterEngine) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = engine
        self.metrics = ServingMetrics(settings.frontend.model_name)
        self.tokenizer = tokenization.tokenizer(settings)
        scorer = PrefillPeers(
            engine.workers, clock, settings.router.reserve_wait_s * settings.runtime.time_scale
        )
        self.long_context = long_context.LongContext(settings, clock, scorer)
        self.long_context_metrics = LongContextMetrics(self.metrics.registry)

    def tokenize(self, request: router_pb2.GenerateRequest) -> list[int]:
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
        long_context.admit(len(prompt), request, self.settings)  # reject, or a policy for over-long prompts
        return prompt

    async def generate(
        self, request: router_pb2.GenerateRequest, source: PromptSource
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        """The request's chunks, the last with its stats; errors surface as domain errors."""
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
                yield router_wire.chunk_to_pb(record, chunk, detok.feed(chunk.token_ids))
        if record.num_prefills > 1:  # the KV was lost and the prompt computed again
            self.metrics.on_preemption()
        yield router_wire.final_to_pb(record, detok.flush())
