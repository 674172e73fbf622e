"""One HTTP request served by `n` router `Generate` streams (its choices), with or without SSE.

Lifecycle of a request here:
1. `respond` opens every choice's stream and waits for each first chunk, so router errors that come
   before any token (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE) still get a proper HTTP status
   and body.
2. Non-streaming: each choice's text is collected (stop strings applied) into one body.
   Streaming: a `text/event-stream` response relays each choice's pieces as they arrive, one event
   each (tagged with the choice's index; with `continuous_usage_stats` each chunk carries the usage so
   far; events that queued up while a write was under way go out in one write), then (with
   `stream_options.include_usage`) a usage chunk, then `data: [DONE]`. An error after the headers went
   out is sent as a `data: {"error": ...}` event followed by `[DONE]`.
3. A client that disconnects, or stops reading and is cut off (frontend/admission.py), cancels the
   relay: `RelayResponse` closes the event generator as soon as the response task ends, however it
   ends, which closes the SDK streams and so cancels the router calls (decode slots and KV freed then,
   not when the connection is finally torn down or the generator collected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from supernode.core.predictive import TokenLogprob
from supernode.frontend.choices import Choice, ChoiceResult, Piece, Usage
from supernode.frontend.client import RouterClient
from supernode.frontend.encoders import DONE, Encoder, sse
from supernode.frontend.errors import error_body, error_response, router_param
from supernode.frontend.schemas import GenerateParams
from supernode.runtime.errors import SupernodeError
from supernode.runtime.metrics import ServingMetrics

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_QUEUE_BOUND = 64  # pieces waiting to be written per response (choices wait when it is full)


async def respond(
    client: RouterClient, params: GenerateParams, encoder: Encoder, metrics: ServingMetrics, *,
    stream: bool, request_id: str, prompt_param: str, time_scale: float = 1.0, eos_token_id: int = 1,
    arrived_at: float | None = None, on_first_token: Callable[[], None] | None = None,
) -> Response:  # fmt: skip
    """The HTTP response for one generation request (`prompt_param` names the prompt in errors;
    `arrived_at`: monotonic wall time the request reached the frontend; `on_first_token` is called
    when every choice has its first chunk from the router)."""
    queued_s = 0.0 if arrived_at is None else max(0.0, time.monotonic() - arrived_at)
    choices = [
        Choice(client, params, i, metrics, request_id, time_scale, eos_token_id, queued_s)
        for i in range(params.n)
    ]
    opened = await asyncio.gather(*(c.open() for c in choices), return_exceptions=True)
    failure = next((r for r in opened if isinstance(r, BaseException)), None)
    if failure is not None:
        await _close(choices)
        if isinstance(failure, SupernodeError):
            return error_response(failure, router_param(failure, prompt_param))
        raise failure
    if on_first_token is not None:
        on_first_token()
    encoder.start(choices[0].request_id)
    headers = {"X-Request-Id": choices[0].request_id}
    if stream:
        events = _events(choices, encoder, params, prompt_param)
        return RelayResponse(events, media_type="text/event-stream", headers=SSE_HEADERS | headers)
    try:
        results = await asyncio.gather(*(_collect(c) for c in choices))
    except SupernodeError as err:
        for c in choices:
            c.fail(err.code)
        return error_response(err, router_param(err, prompt_param))
    finally:
        await _close(choices)
    body = encoder.full(results, _total([c.usage() for c in choices]))
    return Response(json.dumps(body), headers=headers, media_type="application/json")


class RelayResponse(StreamingResponse):
    """A StreamingResponse that closes its body generator however the response ends. Starlette only
    iterates it: cancelled mid-write (a client cut off for not reading, or gone), the generator would
    stay suspended, holding its router streams, until collected."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _collect(choice: Choice) -> ChoiceResult:
    texts: list[str] = []
    logprobs: list[TokenLogprob] = []
    async for piece in choice.pieces():
        texts.append(piece.text)
        logprobs.extend(piece.logprobs)
        if piece.finish_reason is not None:
            return ChoiceResult(
                "".join(texts), piece.finish_reason, logprobs if choice.has_logprobs else None
            )
    raise AssertionError("pieces() ends with a finish reason")


async def _events(
    choices: list[Choice], encoder: Encoder, params: GenerateParams, prompt_param: str
) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[tuple[int, Piece] | BaseException | None] = asyncio.Queue(_QUEUE_BOUND)
    num_output = 0

    async def pump(choice: Choice) -> None:
        try:
            async for piece in choice.pieces():
                await queue.put((choice.index, piece))
        except (asyncio.CancelledError, GeneratorExit):
            # The writer is gone or failed (and cancels us): nobody waits for a signal, and
            # waiting to put one into a full queue would never end.
            raise
        except BaseException as err:  # noqa: BLE001 - handed to the writer, which re-raises or reports
            await queue.put(err)
            return
        await queue.put(None)

    # Pump tasks are held here, not in a TaskGroup: the generator may be closed at any `yield` (its
    # client was cut off), and a GeneratorExit inside a TaskGroup's body comes out as a group.
    pumps: list[asyncio.Task[None]] = []
    try:
        for choice in choices:
            if opening := encoder.first(choice.index):
                yield opening
        pumps = [asyncio.ensure_future(pump(choice)) for choice in choices]
        num_done = 0
        while num_done < len(choices):
            # Every piece already waiting goes out in one write: a relay that falls behind (many
            # streams on a busy host) then pays its send path once per batch of events, not per
            # token, and catches up. The events are the same; only the TCP writes are fewer.
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            events: list[bytes] = []
            for item in items:
                if item is None:
                    num_done += 1
                    continue
                if isinstance(item, BaseException):
                    if events:
                        yield b"".join(events)
                    raise item
                index, piece = item
                num_output += piece.num_tokens
                if piece.text or piece.finish_reason is not None or piece.logprobs:
                    usage = _usage_so_far(params, num_output) if params.continuous_usage_stats else None
                    logprobs = piece.logprobs if params.logprobs is not None else None
                    events.append(encoder.delta(piece.text, piece.finish_reason, index, usage, logprobs))
            if events:
                yield b"".join(events)
        if encoder.include_usage:
            yield encoder.usage_chunk(_total([c.usage() for c in choices]))
    except SupernodeError as err:
        for c in choices:
            c.fail(err.code)
        yield sse(error_body(err.message, err.openai_type, router_param(err, prompt_param), err.code.lower()))
    finally:
        # Starlette runs the body in an anyio task group, whose cancellation is delivered again at
        # every await: the closing runs as a task of its own, shielded, so it completes however
        # this generator is interrupted.
        closing = asyncio.ensure_future(_stop(pumps, choices))
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
        await asyncio.shield(closing)
    yield DONE


def _usage_so_far(params: GenerateParams, num_output: int) -> Usage:
    return Usage(params.num_prompt_tokens, num_output, 0)


def _total(usages: list[Usage]) -> Usage:
    """The response's usage: the prompt once (as vLLM counts it), every choice's output and moves."""
    first = usages[0]
    return Usage(
        first.num_prompt_tokens, sum(u.num_output_tokens for u in usages), first.num_cached_tokens,
        sum(u.num_migrations for u in usages),
    )  # fmt: skip


_closing: set[asyncio.Task[None]] = set()  # relays being closed (a reference keeps each task alive)


async def _stop(pumps: list[asyncio.Task[None]], choices: list[Choice]) -> None:
    for task in pumps:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    await _close(choices)


async def _close(choices: list[Choice]) -> None:
    for choice in choices:
        with contextlib.suppress(Exception):
            await choice.close()
