"""The load `make chaos` sends, and how each request ended.

Every request is a `Spec` (prompt token ids, seed, max_tokens) drawn from one seeded generator, so a
scenario's request i is the fault-free run's request i and its tokens must be the same. Requests go
to the router through the SDK (`run_sdk`) or to the HTTP frontend as SSE streams (`run_http`, or
`run_lean_http` for bursts); each is bounded by `timeout_s` wall seconds, after which it counts as
hung. Times are wall seconds (at time_scale 1.0 wall and emulated time agree).

Outcomes: completed (finished chunk), failed (an error before any token), lost (an error after tokens
had been sent), hung (no end within the bound), shed (RESOURCE_EXHAUSTED / HTTP 429).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from benchmarks.lean_http import post_sse
from supernode.sdk import AsyncClient, SupernodeError

FIRST_TOKEN_ID = 300  # pseudo-word tokens, away from bytes and end-of-sequence


@dataclass(frozen=True, slots=True)
class Spec:
    index: int
    prompt: list[int]
    seed: int
    max_tokens: int


def make_specs(num: int, max_tokens: int, seed: int = 7) -> list[Spec]:
    """`num` requests with 256-1024-token prompts; a third share a 256-token prefix (context cache)."""
    rng = random.Random(seed)
    shared = [rng.randrange(FIRST_TOKEN_ID, 120_000) for _ in range(256)]
    specs = []
    for i in range(num):
        body = [rng.randrange(FIRST_TOKEN_ID, 120_000) for _ in range(rng.randrange(256, 1024))]
        prompt = shared + body if i % 3 == 0 else body
        specs.append(Spec(i, prompt, seed=1000 + i, max_tokens=max_tokens))
    return specs


@dataclass(slots=True)
class Outcome:
    index: int
    sent_at_s: float  # since the load started
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    ttft_s: float | None = None
    e2e_s: float | None = None
    error: str = ""  # gRPC status name or HTTP status; "" when none
    is_finished: bool = False
    is_hung: bool = False
    decode_worker: str = ""
    num_migrations: int = 0  # times the router moved it to another decode instance (its final stats)

    @property
    def kind(self) -> str:
        if self.is_finished:
            return "completed"
        if self.is_hung:
            return "hung"
        if self.error in ("RESOURCE_EXHAUSTED", "429"):
            return "shed"
        return "lost" if self.token_ids or self.text else "failed"


async def run_sdk(client: AsyncClient, spec: Spec, sent_at_s: float, timeout_s: float) -> Outcome:
    out = Outcome(spec.index, sent_at_s)
    started = time.monotonic()
    stream = client.generate(
        token_ids=spec.prompt, max_tokens=spec.max_tokens, seed=spec.seed, timeout_s=timeout_s + 5
    )
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in stream:
                if out.ttft_s is None and chunk.token_ids:
                    out.ttft_s = time.monotonic() - started
                out.token_ids += chunk.token_ids
                out.text += chunk.text
                if chunk.finished:
                    out.is_finished = True
                    out.decode_worker = chunk.stats.decode_worker if chunk.stats else ""
                    out.num_migrations = chunk.stats.num_migrations if chunk.stats else 0
    except TimeoutError:
        out.is_hung = True
    except SupernodeError as err:
        out.error = err.code
    finally:
        await stream.aclose()
    out.e2e_s = time.monotonic() - started
    return out


async def run_http(http: httpx.AsyncClient, spec: Spec, sent_at_s: float, timeout_s: float) -> Outcome:
    """One streaming /v1/completions request; the text is compared, as HTTP carries no token ids."""
    out = Outcome(spec.index, sent_at_s)
    started = time.monotonic()
    try:
        body = _body(spec)
        async with asyncio.timeout(timeout_s), http.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                out.error = str(resp.status_code)
                await resp.aread()
            else:
                await _read_sse(resp, out, started)
    except TimeoutError:
        out.is_hung = True
    except httpx.HTTPError as err:
        out.error = type(err).__name__
    out.e2e_s = time.monotonic() - started
    return out


async def _read_sse(resp: httpx.Response, out: Outcome, started: float) -> None:
    async for line in resp.aiter_lines():
        if line.startswith("data: ") and _on_event(out, started, line.removeprefix("data: ")):
            return


async def run_lean_http(address: str, spec: Spec, sent_at_s: float, timeout_s: float) -> Outcome:
    """`run_http` through benchmarks/lean_http.py (one connection per request, a fraction of httpx's
    CPU), for bursts that would otherwise make the load generator the slowest part of the host."""
    out = Outcome(spec.index, sent_at_s)
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            status = await post_sse(host, int(port), "/v1/completions", _body(spec),
                                    lambda data: _on_event(out, started, data))  # fmt: skip
        if status != 200:
            out.error = str(status)
    except TimeoutError:
        out.is_hung = True
    except (OSError, asyncio.IncompleteReadError, ValueError) as err:
        out.error = type(err).__name__
    out.e2e_s = time.monotonic() - started
    return out


def _body(spec: Spec) -> dict[str, object]:
    # ignore_eos as the SDK's default: the same request as the fault-free run's, token for token.
    return {"model": "deepseek-r1", "prompt": spec.prompt, "max_tokens": spec.max_tokens,
            "seed": spec.seed, "stream": True, "ignore_eos": True}  # fmt: skip


def _on_event(out: Outcome, started: float, data: str) -> bool:
    """One SSE `data:` payload into `out`; True at `[DONE]`."""
    if data == "[DONE]":
        return True
    event = json.loads(data)
    if "error" in event:
        out.error = str(event["error"].get("code") or "error")
        return False
    for choice in event.get("choices", ()):
        text = choice.get("text") or ""
        if text and out.ttft_s is None:
            out.ttft_s = time.monotonic() - started
        out.text += text
        if choice.get("finish_reason"):
            out.is_finished = True
    return False


async def drive(
    specs: list[Spec],
    send: Callable[[Spec, float], Awaitable[Outcome]],
    spread_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Sends `specs` spread evenly over `spread_s` seconds with `send(spec, sent_at_s)`; returns outcomes
    in spec order. `progress(done, total)` is called when requests ended, at most every 2 s, and every
    10 s while none does."""
    started = time.monotonic()
    done = 0

    async def one(k: int, spec: Spec) -> Outcome:
        nonlocal done
        delay = spread_s * k / max(1, len(specs))
        await asyncio.sleep(delay)
        result = await send(spec, time.monotonic() - started)
        done += 1
        return result

    tasks = [asyncio.ensure_future(one(k, s)) for k, s in enumerate(specs)]
    reported, reported_at = -1, 0.0
    try:
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=2.0)
            now = time.monotonic()
            if progress is not None and (done != reported or now - reported_at >= 10):
                progress(done, len(specs))
                reported, reported_at = done, now
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
