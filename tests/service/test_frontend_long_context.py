"""The HTTP API's `long_context` body field reaches the router, and a bad value is a 400 naming it."""

from __future__ import annotations

import openai
import pytest

from supernode.frontend.app import create_app
from supernode.frontend.fake_router import FakeRouter, serve_fake_router
from supernode.frontend.server import serve_in_background
from supernode.runtime.config import Settings


async def test_long_context_body_field_is_passed_and_checked() -> None:
    async with serve_fake_router(FakeRouter(tokens_per_chunk=2)) as (address, router):
        settings = Settings(router={"address": address})
        async with serve_in_background(create_app(settings), settings) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            await client.completions.create(
                model="deepseek-r1", prompt="x" * 40, max_tokens=2, extra_body={"long_context": "xl3m"}
            )
            assert router.requests[-1].long_context == "xl3m"
            await client.completions.create(model="deepseek-r1", prompt="x" * 40, max_tokens=2)
            assert router.requests[-1].long_context == ""
            with pytest.raises(openai.BadRequestError) as err:
                await client.completions.create(
                    model="deepseek-r1", prompt="x", max_tokens=2, extra_body={"long_context": "summarise"}
                )
            assert "long_context" in str(err.value)
            await client.close()
