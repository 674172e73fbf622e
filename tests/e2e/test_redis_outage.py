"""Redis goes away under the pool and comes back empty: clear errors meanwhile, no crash, then service."""

from __future__ import annotations

import pytest

from supernode.sdk import AsyncClient, UnavailableError
from tests.e2e.conftest import start_stack

pytestmark = pytest.mark.e2e


async def test_redis_outage_gives_unavailable_then_recovers(tmp_path_factory):
    stack = await start_stack(tmp_path_factory)
    prompt = [1500 + k for k in range(128 * 3)]
    try:
        async with AsyncClient(stack.router_address, timeout_s=60) as client:
            before = await client.complete(token_ids=prompt, max_tokens=6, seed=2)
            stack.stop_redis()
            with pytest.raises(UnavailableError) as err:
                await client.complete(token_ids=prompt, max_tokens=6, seed=2)
            assert "redis" in err.value.message
            assert all(proc.popen.poll() is None for proc in stack.procs), "no service died"
            stack.start_redis()  # back, but empty: the cached prefix is gone and gets recomputed
            after = await client.complete(token_ids=prompt, max_tokens=6, seed=2)
            assert after.token_ids == before.token_ids
            assert after.stats.num_cached_tokens == 0
            again = await client.complete(token_ids=prompt, max_tokens=6, seed=2)
            assert again.stats.num_cached_tokens == 128 * 3 - 1  # the last token is always computed
    finally:
        stack.stop()
