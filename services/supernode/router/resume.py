"""Resuming a request elsewhere after its decode broke: what to prefill, reserve and decode.

Tokens are a function of the context and the seed (core/tokens.py), and an end-of-sequence plan is a
position in the context, so a request that has sent tokens t0..t(k-1) continues identically from the
KV of prompt + t0..t(k-2) with t(k-1) as the decode's first token: the new decode instance emits
t(k).. as the old one would have, in the same MTP groups (DecodeScheduler.add replays the draws).
"""

from __future__ import annotations

from supernode.core.request import Request
from supernode.runtime.peers import PrefillResult


def can_resume(request: Request) -> bool:
    """Whether every token sent is known (a counting-only run keeps none)."""
    return request.num_generated >= 1 and len(request.output) == request.num_generated


def refusal(request: Request, max_migrations: int) -> str:
    """Why the request may not move again ("limit", "untracked"), or "" when it may."""
    if request.num_migrations >= max_migrations:
        return "limit"
    if not can_resume(request):
        return "untracked"
    return ""


def finish_reason_so_far(request: Request) -> str:
    """ "length" or "stop" when the tokens sent already end the request (so nothing is left to
    decode), else ""."""
    if request.num_generated >= request.max_tokens:
        return "length"
    if request.output and request.output[-1] in request.sampling.stop_token_ids:
        return "stop"
    return ""


def resume_prompt(request: Request) -> list[int]:
    """What the new instance prefills: the prompt and every token sent but the last."""
    return [*request.prompt, *request.output[:-1]]


def reservation_size(request: Request) -> tuple[int, int]:
    """(tokens the KV will cover, tokens left to generate counting the decode's first token)."""
    num_before = max(0, request.num_generated - 1)
    return request.num_prompt_tokens + num_before, request.max_tokens - num_before


def record_resumed_prefill(request: Request, result: PrefillResult) -> None:
    """Keeps the new KV; the request's own prefill stats (TTFT's parts) stay those of its first."""
    request.kv = result.kv
