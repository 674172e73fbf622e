"""The frontend through the official `openai` client, over real uvicorn and real gRPC to the router's
codec over the in-process cluster (the real router, prefill and decode engines): every text below is
the token model's, token for token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from supernode.core import tokens
from supernode.frontend.app import create_app
from supernode.frontend.server import serve_in_background
from supernode.inproc import ClusterShape, InprocCluster, serve_router
from supernode.runtime.clock import VirtualClock
from supernode.runtime.config import Settings

MODEL = "deepseek-r1"
SHAPE = ClusterShape(num_prefill=1, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**12)
# Byte tokens (the prompt's UTF-8 bytes) and no natural end of sequence, so texts are predictable.
BYTE = {"tokenizer": "byte", "output_len": "fixed:100000"}


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    settings = Settings(tokens=BYTE)
    async with serve_router(InprocCluster(settings, VirtualClock(), SHAPE), settings) as address:
        front = Settings(router={"address": address}, tokens=BYTE)
        async with serve_in_background(create_app(front), front) as url:
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as c:
                yield c


def generated(prompt: str | list[int], seed: int, n: int) -> list[int]:
    ids = tokens.encode(prompt) if isinstance(prompt, str) else prompt
    return tokens.TokenModel(ids, seed).generate(n)


async def test_completion(client: openai.AsyncOpenAI) -> None:
    result = await client.completions.create(model=MODEL, prompt="x" * 40, max_tokens=5, seed=3)
    assert result.object == "text_completion" and result.model == MODEL
    assert result.choices[0].text == tokens.decode(generated("x" * 40, 3, 5))
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        40,
        5,
        45,
    )


async def test_cached_tokens_reported(client: openai.AsyncOpenAI) -> None:
    prompt = "shared " * 40  # 280 bytes: two whole 128-token blocks
    first = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    again = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert first.usage and first.usage.prompt_tokens_details
    assert again.usage and again.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert again.usage.prompt_tokens_details.cached_tokens == 256


async def test_completion_with_token_ids(client: openai.AsyncOpenAI) -> None:
    result = await client.completions.create(model=MODEL, prompt=[300, 301, 302], max_tokens=3, seed=2)
    assert result.usage and result.usage.prompt_tokens == 3
    assert result.choices[0].text == tokens.decode(generated([300, 301, 302], 2, 3))


async def test_completion_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="abc", max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == tokens.decode(generated("abc", 0, 5)) and len(texts) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert not chunks[-1].choices and chunks[-1].usage and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


async def test_completion_stream_without_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(model=MODEL, prompt="abc", max_tokens=4, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks and all(c.choices and c.usage is None for c in chunks)


async def test_chat(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=6,
    )
    assert result.object == "chat.completion"
    expected = "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜><think>\n"
    message = result.choices[0].message
    assert message.role == "assistant" and message.content == tokens.decode(generated(expected, 0, 6))
    assert result.choices[0].finish_reason == "length"
    assert result.usage and result.usage.prompt_tokens == len(expected.encode())


async def test_chat_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    expected = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n"
    assert "".join(d.content or "" for d in deltas) == tokens.decode(generated(expected, 0, 5))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage and chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5


async def test_stop_token_ids_finish_with_stop(client: openai.AsyncOpenAI) -> None:
    out = generated("abc", 0, 10)
    stop = out[2]
    assert stop not in out[:2], "the third token must be the first of its kind for this check"
    result = await client.completions.create(
        model=MODEL, prompt="abc", max_tokens=10, extra_body={"stop_token_ids": [stop]}
    )
    assert result.choices[0].text == tokens.decode(out[:3]) and result.choices[0].finish_reason == "stop"
