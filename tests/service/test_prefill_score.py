"""The prefill service's Score RPC in-process on a virtual clock: scores, pricing, priority, bounds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from supernode.core import predictive, tokens
from supernode.hw import cost as hw_cost
from supernode.runtime.deployments import prefill_deployment
from supernode.v1 import common_pb2, prefill_pb2

FILLER = tokens.encode("The grass is green. The sky is blue. The sun is yellow. Here we go. " * 30)
NEEDLE = tokens.encode("The pass key is 48213. Remember it. 48213 is the pass key. ")
QUESTION = tokens.encode("What is the pass key? The pass key is")


@pytest.fixture
def make_prefill(prefill_stack):
    async def start(xl3m=None, **prefill):
        stub, engine, fabric, pool = await prefill_stack(xl3m, **prefill)
        return stub, engine, pool

    return start


def score_request(rid: str, segment: list[int], fn: str = "") -> prefill_pb2.ScoreRequest:
    return prefill_pb2.ScoreRequest(request_id=rid, segment_ids=segment, question_ids=QUESTION, score_fn=fn)


async def test_score_is_the_token_models_and_priced_with_question_projections_only(make_prefill):
    stub, service, pool = await make_prefill(num_npus=1)
    with_needle = FILLER[:800] + NEEDLE + FILLER[800:]
    a, b = await asyncio.gather(
        stub.Score(score_request("a", with_needle)), stub.Score(score_request("b", FILLER))
    )
    assert a.score == pytest.approx(predictive.score_segment(with_needle, QUESTION))
    assert b.score == pytest.approx(predictive.score_segment(FILLER, QUESTION))
    assert a.score < b.score
    dep = prefill_deployment(service.cfg)
    n, nq = len(with_needle) + len(QUESTION), len(QUESTION)
    alone = hw_cost.prefill_batch_cost(dep, [n], [0], lm_head_tokens=[nq]).total_us / 1e6
    assert a.compute_s > 0 and b.compute_s > 0
    if a.compute_s < alone * (1 - 1e-9):  # it shared a batch: its share is by tokens
        assert a.compute_s / b.compute_s == pytest.approx(n / (len(FILLER) + nq))
    assert await pool.store.num_keys(pool.namespace) == 0  # scoring keeps and stores no KV
    m = service.scorer.metrics
    assert m.jobs.labels(service.worker_id)._value.get() == 2
    assert m.tokens.labels(service.worker_id)._value.get() == len(with_needle) + len(FILLER) + 2 * nq
    batch_s = m.batch_seconds.labels(service.worker_id)._value.get()
    assert m.seconds.labels(service.worker_id)._value.get() == pytest.approx(batch_s)  # only scoring ran
    assert a.compute_s + b.compute_s == pytest.approx(batch_s)  # the shares add up to the batch time


async def test_scoring_and_interactive_prefill_share_batches_per_the_priority_setting(make_prefill):
    stub, service, _ = await make_prefill(
        num_npus=1, tokens_per_npu=2048, xl3m={"scoring_priority": "normal"}
    )
    assert service.scheduler.priority == "normal"  # the setting reaches the batcher
    prompt = prefill_pb2.PrefillRequest(
        request_id="p", token_ids=[1000] * 2000, sampling=common_pb2.Sampling()
    )
    scoring = [stub.Score(score_request(f"s{i}", FILLER)) for i in range(4)]
    interactive, *done = await asyncio.gather(stub.Prefill(prompt), *scoring)
    assert interactive.kv.num_tokens == 2000 and len(done) == 4
    # Every token computed once, scoring tokens counted apart.
    total = service.metrics.tokens.labels(service.worker_id)._value.get()
    assert total == 2000 + 4 * (len(FILLER) + len(QUESTION))


async def test_bad_score_requests_name_the_field(make_prefill):
    stub, _, _ = await make_prefill()
    cases = [
        (prefill_pb2.ScoreRequest(segment_ids=[1], question_ids=[1]), "request_id"),
        (prefill_pb2.ScoreRequest(request_id="x", question_ids=[1]), "segment_ids"),
        (prefill_pb2.ScoreRequest(request_id="x", segment_ids=[1]), "question_ids"),
        (
            prefill_pb2.ScoreRequest(request_id="x", segment_ids=[1], question_ids=[1], score_fn="ppl"),
            "score_fn",
        ),
        (prefill_pb2.ScoreRequest(request_id="x", segment_ids=[10**6], question_ids=[1]), "segment_ids"),
    ]
    for req, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


async def test_a_full_scoring_queue_is_resource_exhausted(make_prefill):
    stub, service, _ = await make_prefill(num_npus=1, tokens_per_npu=128, max_queue=2)
    calls = [asyncio.ensure_future(stub.Score(score_request(f"s{i}", FILLER))) for i in range(8)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert any(isinstance(r, prefill_pb2.ScoreResponse) for r in results)
