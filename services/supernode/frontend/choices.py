"""One choice of a response: a router `Generate` stream, its stop strings, its metrics.

A choice opens its stream and waits for the first chunk (so an error before any token still gets
a proper HTTP status), then yields `Piece`s: text that may be sent, tokens it covers, and on the
last piece the finish reason. A stop string ends the choice early: the router stream is closed
(the request is cancelled, as vLLM aborts it) and the usage counts the tokens received. Metrics
follow the choice through `ServingMetrics`: waiting until its first chunk, then running; inter-token
latency from the chunk gaps in emulated time (wall gap x time scale). With `logprobs`, each token's
entry comes from the token model's predictive distribution (`core.predictive`), followed over the
prompt and the tokens received.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from supernode.core.predictive import SequenceLogprobs, TokenLogprob
from supernode.frontend.client import ChunkLike, RouterClient, StatsLike
from supernode.frontend.schemas import GenerateParams
from supernode.frontend.stops import StopChecker
from supernode.runtime.errors import InternalError
from supernode.runtime.metrics import RequestTracker, ServingMetrics


@dataclass(frozen=True, slots=True)
class Piece:
    text: str  # text that may be sent now
    num_tokens: int  # output tokens this piece covers
    finish_reason: str | None = None  # set on the choice's last piece
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token of the piece, when logprobs were asked


@dataclass(frozen=True, slots=True)
class ChoiceResult:
    """A whole choice (non-streaming)."""

    text: str
    finish_reason: str
    logprobs: list[TokenLogprob] | None  # None when not asked


@dataclass(slots=True)
class Usage:
    """What a finished choice cost (tokens)."""

    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    num_migrations: int = 0  # times the router moved it to another decode instance after a failure


class Choice:
    def __init__(
        self, client: RouterClient, params: GenerateParams, index: int, metrics: ServingMetrics,
        request_id: str, time_scale: float, eos_token_id: int = 1, queued_s: float = 0.0,
    ) -> None:  # fmt: skip
        """`queued_s`: wall seconds the request already waited in the frontend (the router counts them)."""
        self.index = index
        self.params = params
        self._metrics = metrics
        self._time_scale = time_scale
        self._stops = StopChecker(params.stop, params.min_tokens, params.include_stop_str_in_output)
        rid = request_id if index == 0 or not request_id else f"{request_id}-{index}"
        self._chunks = client.generate(
            params.prompt,
            request_id=rid,
            queued_s=queued_s,
            **params.router_kwargs(index),
        )
        self._tracker: RequestTracker = metrics.on_arrival()
        self._first: ChunkLike | None = None
        self._started = time.monotonic()
        self.stats: StatsLike | None = None
        self.num_output_tokens = 0
        self._predictor = (
            SequenceLogprobs(params.prompt_ids, params.seed + index) if params.logprobs is not None else None
        )

    @property
    def has_logprobs(self) -> bool:
        return self._predictor is not None

    def _logprobs(self, token_ids: list[int]) -> tuple[TokenLogprob, ...]:
        if self._predictor is None or self.params.logprobs is None:
            return ()
        return tuple(self._predictor.step(t, self.params.logprobs) for t in token_ids)

    @property
    def request_id(self) -> str:
        return self._first.request_id if self._first is not None else ""

    async def open(self) -> None:
        """Waits for the first chunk; raises the router's error (SupernodeError) if there is none."""
        try:
            self._first = await anext(self._chunks)
        except BaseException as err:
            self._tracker.on_error(getattr(err, "code", "CANCELLED"))
            await self.close()
            raise
        self._tracker.on_start()

    async def pieces(self) -> AsyncIterator[Piece]:
        """The choice's text as it may be sent; the last piece carries the finish reason."""
        assert self._first is not None, "open() first"
        chunk: ChunkLike | None = self._first
        last_at = time.monotonic()
        is_first = True
        while chunk is not None:
            now = time.monotonic()
            if not is_first and chunk.token_ids:
                self._tracker.on_token((now - last_at) * self._time_scale, len(chunk.token_ids))
            last_at, is_first = now, False
            self.num_output_tokens += len(chunk.token_ids)
            text = self._stops.feed(chunk.text, len(chunk.token_ids))
            logprobs = self._logprobs(chunk.token_ids)
            if self._stops.is_stopped:
                self._finish_early()
                yield Piece(text, len(chunk.token_ids), "stop", logprobs)
                return
            if chunk.finished:
                self.stats = chunk.stats
                self._record(chunk)
                yield Piece(text + self._stops.flush(), len(chunk.token_ids), chunk.finish_reason, logprobs)
                return
            yield Piece(text, len(chunk.token_ids), None, logprobs)
            chunk = await anext(self._chunks, None)
        raise InternalError("the router stream ended without a finished chunk")

    def usage(self) -> Usage:
        if self.stats is not None:
            s = self.stats
            return Usage(s.num_prompt_tokens, s.num_output_tokens, s.num_cached_tokens, s.num_migrations)
        return Usage(self.params.num_prompt_tokens, self.num_output_tokens, 0)

    def fail(self, code: str) -> None:
        self._tracker.on_error(code)

    async def close(self) -> None:
        self._tracker.on_error("CANCELLED")  # a no-op once finished or failed
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    def _record(self, last: ChunkLike) -> None:
        if last.stats is None:
            self._finish_early(last.finish_reason)
            return
        self._tracker.on_finish_stats(last.stats, last.finish_reason, with_ttft=True)

    def _finish_early(self, reason: str = "stop") -> None:
        """Finished here (a stop string) without the router's final stats: frontend-measured."""
        e2e_s = (time.monotonic() - self._started) * self._time_scale
        self._tracker.on_finish(
            num_prompt_tokens=self.params.num_prompt_tokens, num_output_tokens=self.num_output_tokens,
            num_cached_tokens=0, tpot_s=e2e_s / max(1, self.num_output_tokens), e2e_s=e2e_s,
            finish_reason=reason,
        )  # fmt: skip
