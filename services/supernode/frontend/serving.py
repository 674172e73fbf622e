"""One HTTP request served by one router `Generate` stream, with or without SSE.

Lifecycle of a request here:
1. `respond` opens the stream and waits for its first chunk, so router errors that come before any
   token (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE) still get a proper HTTP status and body.
2. Non-streaming: the remaining chunks are collected into one body.
   Streaming: a `text/event-stream` response relays each chunk as it arrives, then (with
   `stream_options.include_usage`) a usage chunk, then `data: [DONE]`. An error after the headers went
   out is sent as a `data: {"error": ...}` event followed by `[DONE]`.
3. A client that disconnects cancels the relay; closing the SDK stream cancels the router call.
Metrics follow the request through `ServingMetrics` (waiting until the first chunk, then running).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from supernode.frontend.client import ChunkLike, RouterClient
from supernode.frontend.encoders import DONE, Encoder, sse
from supernode.frontend.errors import error_body, error_response, router_param
from supernode.frontend.schemas import GenerateParams
from supernode.runtime.errors import InternalError, SupernodeError
from supernode.runtime.metrics import RequestTracker, ServingMetrics

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def respond(
    client: RouterClient,
    params: GenerateParams,
    encoder: Encoder,
    metrics: ServingMetrics,
    *,
    stream: bool,
    request_id: str,
    prompt_param: str,
) -> Response:
    """The HTTP response for one generation request (`prompt_param` names the prompt in errors)."""
    tracker = metrics.on_arrival()
    chunks = client.generate(
        params.prompt,
        token_ids=params.token_ids,
        max_tokens=params.max_tokens,
        seed=params.seed,
        temperature=params.temperature,
        top_p=params.top_p,
        stop_token_ids=params.stop_token_ids,
        ignore_eos=params.ignore_eos,
        request_id=request_id,
        long_context=params.long_context,
    )
    try:
        first = await anext(chunks)
    except SupernodeError as err:
        tracker.on_error(err.code)
        await _close(chunks)
        return error_response(err, router_param(err, prompt_param))
    except BaseException:
        tracker.on_error("CANCELLED")
        await _close(chunks)
        raise
    tracker.on_start()
    encoder.start(first.request_id)
    headers = {"X-Request-Id": first.request_id}
    if stream:
        events = _events(first, chunks, encoder, tracker, metrics, prompt_param)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS | headers)
    try:
        text, last = await _collect(first, chunks)
        _record(tracker, metrics, last)
    except SupernodeError as err:
        tracker.on_error(err.code)
        return error_response(err, router_param(err, prompt_param))
    finally:
        tracker.on_error("CANCELLED")  # a no-op unless the collection was cut short
        await _close(chunks)
    body = encoder.full(text, last.finish_reason, last.stats)
    return Response(json.dumps(body), headers=headers, media_type="application/json")


async def _collect(first: ChunkLike, rest: AsyncIterator[ChunkLike]) -> tuple[str, ChunkLike]:
    texts: list[str] = []
    chunk: ChunkLike | None = first
    while chunk is not None:
        texts.append(chunk.text)
        if chunk.finished:
            return "".join(texts), chunk
        chunk = await anext(rest, None)
    raise _ended_early()


async def _events(
    first: ChunkLike, rest: AsyncIterator[ChunkLike], encoder: Encoder, tracker: RequestTracker,
    metrics: ServingMetrics, prompt_param: str,
) -> AsyncIterator[bytes]:  # fmt: skip
    num_output_tokens = 0
    chunk: ChunkLike | None = first
    try:
        if opening := encoder.first():
            yield opening
        while chunk is not None and not chunk.finished:
            num_output_tokens += len(chunk.token_ids)
            if chunk.text:
                yield encoder.delta(chunk.text, None)
            chunk = await anext(rest, None)
        if chunk is None:
            raise _ended_early()
        num_output_tokens += len(chunk.token_ids)
        yield encoder.delta(chunk.text, chunk.finish_reason)
        _record(tracker, metrics, chunk)
        if encoder.include_usage:
            yield encoder.usage_chunk(chunk.stats, num_output_tokens)
    except SupernodeError as err:
        tracker.on_error(err.code)
        yield sse(error_body(err.message, err.openai_type, router_param(err, prompt_param), err.code.lower()))
    finally:
        tracker.on_error("CANCELLED")  # a no-op once finished or failed
        await _close(rest)
    yield DONE


def _ended_early() -> InternalError:
    return InternalError("the router stream ended without a finished chunk")


def _record(tracker: RequestTracker, metrics: ServingMetrics, last: ChunkLike) -> None:
    stats = last.stats
    if stats is None:
        tracker.on_finish(
            num_prompt_tokens=0, num_output_tokens=0, num_cached_tokens=0, tpot_s=0.0, e2e_s=0.0,
            finish_reason=last.finish_reason,
        )  # fmt: skip
        return
    tracker.on_finish_stats(stats, last.finish_reason, with_ttft=True)


async def _close(chunks: AsyncIterator[ChunkLike]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
