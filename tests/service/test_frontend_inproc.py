"""The frontend through the `openai` client against the real router, prefill and decode engines
(in-process cluster behind the router's gRPC codec): real tokens, real context cache, real limits."""

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
SHAPE = ClusterShape(num_prefill=2, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**12)


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    # Byte tokens and no natural end of sequence: the expected text is the token model's, token for token.
    byte = {"tokenizer": "byte", "output_len": "fixed:100000"}
    settings = Settings(router={"max_tokens_limit": 64}, tokens=byte)
    async with serve_router(InprocCluster(settings, VirtualClock(), SHAPE), settings) as address:
        front = Settings(router={"address": address}, tokens=byte)
        async with serve_in_background(create_app(front), front) as url:
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as c:
                yield c


def expected_text(prompt: str, seed: int, n: int) -> str:
    return tokens.decode(tokens.TokenModel(tokens.encode(prompt), seed).generate(n))


async def test_completion_gives_the_deterministic_tokens(client: openai.AsyncOpenAI) -> None:
    prompt = "The quick brown fox jumps over the lazy dog. " * 4
    result = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, seed=5)
    assert result.choices[0].text == expected_text(prompt, 5, 8)
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 8
    assert result.usage.prompt_tokens == len(prompt.encode())


async def test_streamed_text_matches_and_the_context_cache_hits(client: openai.AsyncOpenAI) -> None:
    prompt = "shared system prompt; " * 20  # 440 bytes: three whole 128-token blocks
    await client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    stream = await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, seed=1, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected_text(prompt, 1, 6)
    usage = chunks[-1].usage
    assert usage and usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 384


async def test_the_routers_own_limits_reach_the_client(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.completions.create(model=MODEL, prompt="a", max_tokens=65)
    assert bad.value.param == "max_tokens"
