"""The router's long-context policies in-process against fake workers (real gRPC on loopback)."""

from __future__ import annotations

import grpc
import pytest

from supernode.core import predictive, tokens
from supernode.router.service import build
from supernode.sdk import AsyncClient, InvalidArgumentError
from supernode.v1 import common_pb2, decode_pb2_grpc, prefill_pb2, prefill_pb2_grpc, router_pb2
from tests.conftest import make_settings
from tests.service.test_router import FakeDecode, start_fake

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "What is the pass key? The pass key is"
WINDOW = 2048


def haystack(num_chars: int, depth: float, key: str = "61803") -> str:
    hay = (FILLER * (num_chars // len(FILLER) + 1))[:num_chars]
    at = int(num_chars * depth)
    return hay[:at] + f"The pass key is {key}. Remember it. {key} is the pass key. " + hay[at:] + QUESTION


class ScoringPrefill(prefill_pb2_grpc.PrefillServicer):
    """Prefill that records the prompts it gets and scores with the real token model."""

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []
        self.num_scored = 0

    async def Prefill(self, request, context):  # noqa: N802
        self.prompts.append(list(request.token_ids))
        kv = common_pb2.KvHandle(
            request_id=request.request_id, block_keys=["0" * 32], num_tokens=1, block_tokens=128
        )
        first = tokens.next_token(list(request.token_ids), request.sampling.seed)
        return prefill_pb2.PrefillResponse(first_token=first, kv=kv, compute_s=0.01)

    async def Score(self, request, context):  # noqa: N802
        self.num_scored += 1
        score = predictive.score_segment(
            list(request.segment_ids), list(request.question_ids), request.score_fn
        )
        return prefill_pb2.ScoreResponse(score=score, compute_s=0.001)

    async def Load(self, request, context):  # noqa: N802
        return common_pb2.LoadReport(role="prefill")


@pytest.fixture
async def router(host_factory):
    async def start(**router):
        prefills = [ScoringPrefill(), ScoringPrefill()]
        p_hosts = [
            await start_fake(host_factory, p, prefill_pb2_grpc.add_PrefillServicer_to_server)
            for p in prefills
        ]
        d_host = await start_fake(host_factory, FakeDecode(), decode_pb2_grpc.add_DecodeServicer_to_server)
        settings = make_settings(
            router={"prefill_addresses": [h.address for h in p_hosts], "decode_addresses": [d_host.address],
                    "max_context_tokens": WINDOW, "metrics_port": 0, **router},
            xl3m={"max_inflight_segments": 8},
            tokens={"tokenizer": "byte"},  # the assertions count and compare byte tokens
        )  # fmt: skip
        host = await host_factory(settings, build(settings))
        return AsyncClient(host.address, timeout_s=30), prefills, host.service

    return start


async def test_reject_names_the_prompt_and_the_window(router):
    client, _, _ = await router()
    with pytest.raises(InvalidArgumentError, match="2048-token context window"):
        await client.complete(haystack(5000, 0.5), max_tokens=4)
    await client.close()


async def test_a_prompt_that_fits_takes_the_normal_path_whatever_the_policy(router):
    client, prefills, _ = await router(long_context="xl3m")
    done = await client.complete("short prompt", max_tokens=2)
    assert done.stats.long_context_policy == "" and sum(p.num_scored for p in prefills) == 0
    assert [p for f in prefills for p in f.prompts] == [tokens.encode("short prompt")]
    await client.close()


async def test_truncate_keeps_the_last_window(router):
    client, prefills, _ = await router(long_context="truncate")
    text = haystack(6000, 0.2)
    done = await client.complete(text, max_tokens=4)
    sent = [p for f in prefills for p in f.prompts]
    assert sent == [tokens.encode(text)[-(WINDOW - 4) :]]
    assert done.stats.long_context_policy == "truncate" and done.stats.num_final_prompt_tokens == WINDOW - 4
    assert done.stats.num_prompt_tokens == len(tokens.encode(text))
    await client.close()


@pytest.mark.parametrize("upload", [False, True])
async def test_xl3m_splices_the_needle_and_answers_it_per_request(router, upload):
    client, prefills, service = await router()  # deployment: reject; the request asks for xl3m
    text = haystack(40_000, 0.3)
    chunks = [text[i : i + 7001] for i in range(0, len(text), 7001)] if upload else None
    done = await client.complete(
        None if upload else text, prompt_chunks=chunks, max_tokens=1, long_context="xl3m"
    )
    sent = [p for f in prefills for p in f.prompts]
    assert len(sent) == 1 and len(sent[0]) + 1 <= WINDOW
    assert tokens.decode(sent[0]).endswith(QUESTION) and "pass key is 61803" in tokens.decode(sent[0])
    assert done.token_ids[0] == tokens.next_token(sent[0], 0)
    s = done.stats
    cfg = service.settings.xl3m
    assert s.long_context_policy == "xl3m" and s.num_segments_scored == sum(p.num_scored for p in prefills)
    assert s.num_segments_scored > 20 and s.num_scoring_tokens > len(text)
    assert s.scoring_s > 0 and s.ttft_s >= s.scoring_s and s.scoring_compute_s > 0
    assert all(p.num_scored > 0 for p in prefills)  # spread over both instances
    assert cfg.kept_segments * ((WINDOW - 1 - cfg.question_tokens) // cfg.kept_segments) >= len(sent[0]) - 64
    metrics = service.front.long_context_metrics
    assert metrics.requests.labels("xl3m")._value.get() == 1
    assert metrics.segments._value.get() == s.num_segments_scored
    assert metrics.final_ttft_s._sum.get() == pytest.approx(s.ttft_s - s.scoring_s)
    await client.close()


async def test_unknown_policy_and_bad_uploads_are_refused(router):
    client, _, _ = await router()
    with pytest.raises(InvalidArgumentError, match="long_context"):
        await client.complete("hi", max_tokens=1, long_context="summarise")
    with pytest.raises(InvalidArgumentError, match="text chunks or token_ids chunks"):
        await client.complete(None, prompt_chunks=[[104, 105], "mixed"], max_tokens=1)
    with pytest.raises(InvalidArgumentError, match="vocabulary"):
        await client.complete(None, prompt_chunks=[[10**7]], max_tokens=1)
    stub_call = client._stub.GenerateUpload(
        iter([router_pb2.UploadChunk(prompt=router_pb2.PromptChunk(text="x"))])
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub_call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "header" in err.value.details()
    await client.close()
