"""End to end: redis-server and the five services as separate processes, driven through the SDK."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from supernode.core import blocks, tokenizer, tokens
from supernode.kvpool.store import redis_key
from supernode.sdk import AsyncClient, Client, InvalidArgumentError

pytestmark = pytest.mark.e2e


def prompt_for(i: int) -> list[int]:
    """Prompts of 100..1,500 tokens; every third shares a 512-token prefix."""
    shared = [1000 + (k % 777) for k in range(512)]
    own = [2000 + ((i * 131 + k) % 5000) for k in range(100 + (i * 97) % 1000)]
    return shared + own if i % 3 == 0 else own


async def run_batch(address: str, n: int) -> list:
    async with AsyncClient(address, timeout_s=120) as client:

        async def one(i: int):
            chunks = [
                c async for c in client.generate(token_ids=prompt_for(i), max_tokens=8 + i % 24, seed=i)
            ]
            return chunks

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_fifty_concurrent_streams_complete_and_repeat(stack):
    first = await run_batch(stack.router_address, 50)
    for i, chunks in enumerate(first):
        ids = [t for c in chunks for t in c.token_ids]
        last = chunks[-1]
        assert last.finished and last.finish_reason == "length"
        assert len(ids) == 8 + i % 24 == last.stats.num_output_tokens
        assert last.stats.num_prompt_tokens == len(prompt_for(i))
        assert last.stats.ttft_s > 0 and last.stats.e2e_s >= last.stats.ttft_s
        assert len(chunks) > 2, "tokens were streamed, not sent at once"
    second = await run_batch(stack.router_address, 50)
    for a, b in zip(first, second, strict=True):
        assert [t for c in a for t in c.token_ids] == [t for c in b for t in c.token_ids]


async def test_blocks_really_pass_through_redis(stack):
    prompt = [3000 + k for k in range(128 * 3 + 40)]
    async with AsyncClient(stack.router_address) as client:
        await client.complete(token_ids=prompt, max_tokens=4, seed=5)
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        keys = blocks.block_keys(prompt, 128)
        for key, expected in zip(keys, blocks.split_blocks(prompt, 128), strict=True):
            raw = await r.get(redis_key("sn", key))
            assert raw is not None, f"block {key} not in Redis"
            assert blocks.open_sealed(raw).tokens == expected  # digest verified
        assert (await r.config_get("maxmemory-policy"))["maxmemory-policy"] == "allkeys-lru"
    finally:
        await r.aclose()


async def test_shared_prefix_reports_cached_tokens(stack):
    prefix = [4000 + (k * 7) % 900 for k in range(128 * 4)]
    async with AsyncClient(stack.router_address) as client:
        cold = await client.complete(token_ids=prefix + [11, 12, 13], max_tokens=4)
        warm = await client.complete(token_ids=prefix + [21, 22, 23, 24], max_tokens=4)
    assert cold.stats.num_cached_tokens == 0
    assert warm.stats.num_cached_tokens == 128 * 4
    assert warm.stats.cache_load_s > 0


async def test_text_prompt_and_copying_model(stack):
    text = "Say: alpha beta gamma delta epsilon. Say: alpha beta gamma"
    with Client(stack.router_address) as client:
        done = client.complete(text, max_tokens=12, seed=1)
    deepseek = tokenizer.deepseek()  # the router's default tokenizer
    assert done.text == deepseek.decode(tokens.TokenModel(deepseek.encode(text), 1).generate(12))
    assert done.text == " delta epsilon. Say: alpha beta gamma delta epsilon. Say"  # copied from the prompt
    assert done.stats.num_prompt_tokens == len(deepseek.encode(text)) == 13


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 10**6}, "max_tokens"),
        ({"token_ids": [1] * 163_840}, "prompt"),
        ({"token_ids": [10**7]}, "token_ids"),
    ],
)
async def test_bad_input_names_the_field(stack, kwargs, field):
    async with AsyncClient(stack.router_address) as client:
        with pytest.raises(InvalidArgumentError) as err:
            await client.complete(**{"max_tokens": 4, **kwargs})
        assert err.value.message.startswith(field)
        assert err.value.field == field
        ok = await client.complete("still serving", max_tokens=2)
        assert len(ok.token_ids) == 2


def test_fabric_cli_shows_leases_and_busy_links_and_faults_bite(stack):
    from typer.testing import CliRunner

    from supernode.cli import app
    from supernode.runtime.channels import open_channel
    from supernode.runtime.config import Settings
    from supernode.sdk import UnavailableError
    from supernode.v1 import fabric_pb2, fabric_pb2_grpc

    runner = CliRunner()
    fabric = ["--address", stack.address("fabric")]
    with Client(stack.router_address) as client:
        client.complete(token_ids=[700 + k for k in range(600)], max_tokens=3)
    out = runner.invoke(app, ["fabric", "status", *fabric], terminal_width=200).output
    assert "prefill-0" in out and "decode-0" in out
    assert "rdma/" in out, "the P->D pull went over RDMA"
    # Take down the node that holds decode-0's dies (the workers lease concurrently, so look it up).
    settings = Settings()

    async def decode_node() -> int:
        async with open_channel(stack.address("fabric"), settings) as channel:
            reply = await fabric_pb2_grpc.FabricStub(channel).Describe(fabric_pb2.DescribeRequest())
        (lease,) = [lease for lease in reply.leases if lease.worker_id == "decode-0"]
        return lease.dies[0] // 16

    node = asyncio.run(decode_node())
    out = runner.invoke(app, ["fabric", "fault", "--node", str(node), "--duration-s", "60", *fabric]).output
    assert "links at 0%" in out
    with Client(stack.router_address) as client, pytest.raises(UnavailableError):
        client.complete(token_ids=[800 + k for k in range(300)], max_tokens=3)
    assert "cleared 1" in runner.invoke(app, ["fabric", "clear", *fabric]).output
    with Client(stack.router_address) as client:
        assert len(client.complete(token_ids=[900 + k for k in range(300)], max_tokens=3).token_ids) == 3


async def test_a_client_that_leaves_frees_its_decode_slot(stack):
    from supernode.runtime.channels import open_channel
    from supernode.runtime.config import Settings
    from supernode.v1 import common_pb2, decode_pb2_grpc

    async with AsyncClient(stack.router_address) as client:
        stream = client.generate(token_ids=[2500 + k for k in range(200)], max_tokens=5000, seed=1)
        async for _ in stream:
            break  # leave after the first chunk, 4,999 tokens early
        await stream.aclose()
    async with open_channel(stack.address("decode-0"), Settings()) as channel:
        stub = decode_pb2_grpc.DecodeStub(channel)
        for _ in range(50):
            load = await stub.Load(common_pb2.LoadRequest())
            if load.num_running == 0 and load.kv_tokens_used == 0:
                break
            await asyncio.sleep(0.1)
        assert load.num_running == 0 and load.kv_tokens_used == 0, (
            "the abandoned request still holds its slot"
        )
