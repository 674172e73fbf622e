"""The frontend through the official `openai` client, over real uvicorn and real gRPC to a fake router."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.server import serve_in_background
from supernode.runtime.config import Settings

MODEL = "deepseek-r1"


@pytest.fixture
async def setup() -> AsyncIterator[tuple[openai.AsyncOpenAI, FakeRouter]]:
    async with serve_fake_router(FakeRouter(tokens_per_chunk=2)) as (address, router):
        settings = Settings(router={"address": address})  # type: ignore[arg-type]
        async with serve_in_background(create_app(settings), settings) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            yield client, router
            await client.close()


async def test_completion(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, router = setup
    result = await client.completions.create(model=MODEL, prompt="x" * 40, max_tokens=5, seed=3)
    assert result.object == "text_completion" and result.model == MODEL
    assert result.choices[0].text == "rstuv" and result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        40,
        5,
        45,
    )
    sent = router.requests[-1]
    assert (sent.prompt, sent.max_tokens, sent.sampling.seed, sent.sampling.ignore_eos) == (
        "x" * 40,
        5,
        3,
        False,  # vLLM's default: the model may end the sequence
    )


async def test_cached_tokens_reported(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, _ = setup
    first = await client.completions.create(model=MODEL, prompt="shared " * 10, max_tokens=2)
    again = await client.completions.create(model=MODEL, prompt="shared " * 10, max_tokens=2)
    assert first.usage and first.usage.prompt_tokens_details
    assert again.usage and again.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert again.usage.prompt_tokens_details.cached_tokens == 64  # 70 tokens = 4 whole 16-token blocks


async def test_completion_with_token_ids(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, router = setup
    result = await client.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=3)
    assert result.usage and result.usage.prompt_tokens == 3
    assert list(router.requests[-1].token_ids) == [1, 2, 3] and router.requests[-1].prompt == ""


async def test_completion_stream_with_usage(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, _ = setup
    stream = await client.completions.create(
        model=MODEL, prompt="abc", max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == "defgh" and len(texts) == 3  # two tokens per router chunk
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert not chunks[-1].choices and chunks[-1].usage and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


async def test_completion_stream_without_usage(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, _ = setup
    stream = await client.completions.create(model=MODEL, prompt="abc", max_tokens=4, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)


async def test_chat(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, router = setup
    result = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=6,
    )
    assert result.object == "chat.completion"
    message = result.choices[0].message
    assert message.role == "assistant" and len(message.content or "") == 6
    assert result.choices[0].finish_reason == "length"
    expected = "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜><think>\n"
    assert router.requests[-1].prompt == expected and router.requests[-1].max_tokens == 6
    assert result.usage and result.usage.prompt_tokens == len(expected.encode())


async def test_chat_stream(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, _ = setup
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert len("".join(d.content or "" for d in deltas)) == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage and chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5


async def test_stop_token_ids_finish_with_stop(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, _ = setup
    result = await client.completions.create(
        model=MODEL, prompt="abc", max_tokens=10, extra_body={"stop_token_ids": [ord("f")]}
    )
    assert result.choices[0].text == "def" and result.choices[0].finish_reason == "stop"


async def test_models_and_errors_as_exceptions(setup: tuple[openai.AsyncOpenAI, FakeRouter]) -> None:
    client, _ = setup
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.completions.create(model="gpt-4", prompt="a")
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.completions.create(model=MODEL, prompt="a", max_tokens=10**9)
    assert bad.value.param == "max_tokens"
    with pytest.raises(openai.RateLimitError):
        await client.completions.create(model=MODEL, prompt="!error:RESOURCE_EXHAUSTED")
    with pytest.raises(openai.InternalServerError) as unavailable:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "!error:UNAVAILABLE"}]
        )
    assert unavailable.value.status_code == 503
