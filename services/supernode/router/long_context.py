"""The router's long-context policy: prompts over the window are rejected, truncated, or run by XL3M.

A request's states here, before the normal path (reserve decode, prefill, decode):
1. admitted: a prompt that fits (prompt + max_tokens <= window) passes untouched whatever the policy;
   `reject` refuses an over-long one with INVALID_ARGUMENT;
2. `truncate`: the last (window - max_tokens) tokens become the prompt;
3. `xl3m`: the plan (core/xl3m.py) cuts the context into overlapping windows; each window + question
   is scored by a `SegmentScorer` (prefill workers' `Score` RPC, or the model directly), at most
   `xl3m.max_inflight_segments` at a time; the K lowest scores are kept while results stream in;
   the kept windows are merged and spliced with the question;
4. the final prompt goes through the normal path; its last chunk's stats gain the long-context
   fields and TTFT includes the scoring time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Protocol

from supernode.core import predictive, xl3m
from supernode.hw import cost as hw_cost
from supernode.hw.specs import PrefillDeployment
from supernode.router.long_context_metrics import LongContextMetrics, Outcome
from supernode.router.prompt_source import PromptSource
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.errors import invalid
from supernode.runtime.peers import ScoreResult
from supernode.v1 import router_pb2

POLICIES = ("reject", "truncate", "xl3m")


class SegmentScorer(Protocol):
    async def score(
        self, job_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult: ...


class DirectScorer:
    """Scores in this process with the token model and prices each job alone with the cost model
    (no queueing, no waiting): for tests and for lengths the live stack cannot carry here."""

    def __init__(self, deployment: PrefillDeployment) -> None:
        self.deployment = deployment

    async def score(
        self, job_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        value = predictive.score_segment(segment, question, score_fn)
        n, nq = len(segment) + len(question), len(question)
        cost = hw_cost.prefill_batch_cost(self.deployment, [n], [0], lm_head_tokens=[nq])
        return ScoreResult(value, cost.total_us / 1e6, 0.0)


def choose_policy(requested: str, default: str) -> str:
    if requested and requested not in POLICIES:
        raise invalid("long_context", f"must be one of {', '.join(POLICIES)} (or empty for the router's)")
    return requested or default


def admit(num_prompt: int, request: router_pb2.GenerateRequest, settings: Settings) -> str:
    """The policy for this request; raises the `reject` error at once for an over-long prompt."""
    policy = choose_policy(request.long_context, settings.router.long_context)
    window = settings.router.max_context_tokens
    if num_prompt + request.max_tokens > window and policy == "reject":
        raise invalid(
            "prompt",
            f"{num_prompt} prompt tokens + {request.max_tokens} max_tokens exceed the "
            f"{window}-token context window (long_context=reject; truncate or xl3m would serve it)",
        )
    return policy


def validate_header(request: router_pb2.GenerateRequest, num_prompt: int, settings: Settings) -> str:
    """The checks Generate makes on a request, for an upload's header once its prompt is in."""
    limit = settings.router.max_tokens_limit
    if not 1 <= request.max_tokens <= limit:
        raise invalid("max_tokens", f"must be between 1 and {limit}")
    if request.deadline_s < 0:
        raise invalid("deadline_s", "must be >= 0")
    return admit(num_prompt, request, settings)


class LongContext:
    def __init__(self, settings: Settings, clock: Clock, scorer: SegmentScorer) -> None:
        self.settings = settings
        self.clock = clock
        self.scorer = scorer

    async def fit(
        self, source: PromptSource, request: router_pb2.GenerateRequest, request_id: str
    ) -> Outcome:
        """The prompt the normal path runs, per the request's policy."""
        policy = admit(source.num_tokens, request, self.settings)
        num, window = source.num_tokens, self.settings.router.max_context_tokens
        if num + request.max_tokens <= window:
            return Outcome("", source.read(0, num), num)
        room = window - request.max_tokens
        if policy == "truncate":
            if room < 1:
                raise invalid("max_tokens", f"leaves no room for the prompt in the {window}-token window")
            return Outcome("truncate", source.read(num - room, num), num)
        cfg = self.settings.xl3m
        try:
            plan = xl3m.make_plan(
                num, window, request.max_tokens, question_tokens=cfg.question_tokens,
                segment_tokens=cfg.segment_tokens, overlap_tokens=cfg.overlap_tokens,
                kept_segments=cfg.kept_segments,
            )  # fmt: skip
        except xl3m.PlanError as err:
            raise invalid(err.field, err.rule) from None
        started = self.clock.now()
        out = await self._run_xl3m(source, plan, request_id)
        out.scoring_s = self.clock.now() - started
        return out

    async def _run_xl3m(self, source: PromptSource, plan: xl3m.Plan, request_id: str) -> Outcome:
        cfg = self.settings.xl3m
        question = source.read(plan.num_context, plan.num_prompt)
        top = xl3m.TopK(plan.kept)
        out = Outcome("xl3m", [], plan.num_prompt)
        pending: set[asyncio.Task[tuple[int, int, int, list[int], ScoreResult]]] = set()

        async def one(i: int, start: int, end: int) -> tuple[int, int, int, list[int], ScoreResult]:
            segment = source.read(start, end)
            result = await self.scorer.score(f"{request_id}:s{i}", segment, question, cfg.score_fn)
            return i, start, end, segment, result

        def take(done: set[asyncio.Task[tuple[int, int, int, list[int], ScoreResult]]]) -> None:
            for task in done:
                i, start, end, segment, result = task.result()
                top.push(i, start, end, result.score, segment)
                out.num_segments += 1
                out.num_scoring_tokens += len(segment) + len(question)
                out.scoring_compute_s += result.compute_s

        try:
            for i, (start, end) in enumerate(xl3m.windows(plan.num_context, plan.segment, plan.overlap)):
                if len(pending) >= cfg.max_inflight_segments:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    take(done)
                pending.add(asyncio.create_task(one(i, start, end)))
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                take(done)
        finally:
            for task in pending:
                task.cancel()
        out.num_kept = len(top)
        out.prompt = xl3m.splice(top.kept(), question)
        return out

    async def serve(
        self,
        request: router_pb2.GenerateRequest,
        request_id: str,
        source: PromptSource,
        run: Callable[[list[int]], AsyncIterator[router_pb2.GenerateChunk]],
        metrics: LongContextMetrics | None = None,
    ) -> AsyncGenerator[router_pb2.GenerateChunk, None]:
        """Fits the prompt, then relays `run(prompt)` (the normal path) with the long-context stats."""
        try:
            outcome = await self.fit(source, request, request_id)
        finally:
            source.close()
        if metrics is not None:
            metrics.on_outcome(outcome)
        async for chunk in run(outcome.prompt):
            if chunk.finished and outcome.policy:
                annotate(chunk.stats, outcome)
                if metrics is not None:
                    metrics.on_finish(outcome, chunk.stats.ttft_s)
            yield chunk


def annotate(stats: router_pb2.RequestStats, outcome: Outcome) -> None:
    """Adds the long-context fields; TTFT and e2e start at arrival, before scoring."""
    stats.num_final_prompt_tokens = len(outcome.prompt)
    stats.num_prompt_tokens = outcome.num_prompt
    stats.long_context_policy = outcome.policy
    stats.num_segments_scored = outcome.num_segments
    stats.num_scoring_tokens = outcome.num_scoring_tokens
    stats.scoring_s = outcome.scoring_s
    stats.scoring_compute_s = outcome.scoring_compute_s
    stats.ttft_s += outcome.scoring_s
    stats.e2e_s += outcome.scoring_s
