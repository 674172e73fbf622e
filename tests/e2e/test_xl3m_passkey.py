"""End to end: a passkey prompt 16x the router's window, uploaded in chunks, through real processes."""

from __future__ import annotations

import pytest

from supernode.loadgen.passkey import PasskeyCase, chars_per_token
from supernode.loadgen.passkey_run import ask
from supernode.runtime import tokenization
from supernode.runtime.config import Settings
from supernode.sdk import AsyncClient, Client, InvalidArgumentError

pytestmark = pytest.mark.e2e
WINDOW = 4096
CPT = chars_per_token(tokenization.tokenizer(Settings()).encode)  # the stack's tokenizer


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"SUPERNODE_ROUTER__MAX_CONTEXT_TOKENS": str(WINDOW)}


async def test_xl3m_finds_the_passkey_truncate_cannot_and_reject_refuses(stack):
    case = PasskeyCase(64 * 1024, 0.1, "52917", chars_per_token=CPT)
    async with AsyncClient(stack.router_address, timeout_s=300) as client:
        xl3m = await ask(client, case, "xl3m", WINDOW, 300)
        truncate = await ask(client, case, "truncate", WINDOW, 300)
        with pytest.raises(InvalidArgumentError, match="context window"):
            await client.complete(case.text(), max_tokens=16)  # the deployment's policy: reject
    assert xl3m.is_right and not xl3m.error, xl3m
    assert xl3m.num_segments > 60 and xl3m.num_scoring_tokens > 0.98 * case.length
    assert xl3m.num_final_prompt_tokens + 16 <= WINDOW and xl3m.ttft_s >= xl3m.scoring_s > 0
    assert truncate.is_before_last_window and not truncate.is_right and not truncate.error, truncate


def test_the_blocking_client_uploads_in_chunks_too(stack):
    case = PasskeyCase(20_000, 0.5, "77001", chars_per_token=CPT)
    with Client(stack.router_address, timeout_s=300) as client:
        done = client.complete(None, prompt_chunks=case.chunks(4096), max_tokens=16, long_context="xl3m")
    assert case.is_right(done.text) and done.stats.long_context_policy == "xl3m"
    assert done.stats.num_prompt_tokens == pytest.approx(case.length, rel=0.02)  # sized in server tokens
