"""router/long_context.py run directly (no RPC): policies, the bound on tokens in flight, spooling."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from supernode.core import tokens
from supernode.loadgen.passkey import PasskeyCase
from supernode.router.long_context import DirectScorer, LongContext, ScoreResult
from supernode.router.prompt_source import ListSource, SpoolSource
from supernode.runtime.clock import VirtualClock
from supernode.runtime.deployments import prefill_deployment
from supernode.runtime.errors import InvalidArgumentError
from supernode.v1 import router_pb2
from tests.conftest import make_settings

WINDOW = 4096


class CountingScorer:
    """DirectScorer that records how many jobs (and tokens) are in flight at once."""

    def __init__(self, inner: DirectScorer) -> None:
        self.inner = inner
        self.in_flight = self.max_in_flight = 0

    async def score(
        self, job_id: str, segment: Sequence[int], question: Sequence[int], fn: str
    ) -> ScoreResult:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0)
        try:
            return await self.inner.score(job_id, segment, question, fn)
        finally:
            self.in_flight -= 1


def make(policy: str = "xl3m", **xl3m: int) -> tuple[LongContext, CountingScorer]:
    settings = make_settings(router={"max_context_tokens": WINDOW, "long_context": policy}, xl3m=xl3m)
    scorer = CountingScorer(DirectScorer(prefill_deployment(settings.prefill)))
    return LongContext(settings, VirtualClock(), scorer), scorer


@pytest.mark.parametrize("depth", [0.0, 0.37, 1.0])
async def test_xl3m_directly_keeps_the_passkey_with_bounded_jobs_in_flight(depth):
    lc, scorer = make(max_inflight_segments=5)
    case = PasskeyCase(100_000, depth, "31415")
    request = router_pb2.GenerateRequest(max_tokens=16)
    out = await lc.fit(ListSource(tokens.encode(case.text())), request, "r")
    text = tokens.decode(out.prompt)
    assert "pass key is 31415" in text and len(out.prompt) + 16 <= WINDOW
    assert tokens.decode(tokens.TokenModel(out.prompt, 0).generate(8)).strip().startswith("31415")
    assert out.policy == "xl3m" and out.num_segments > 100 and out.scoring_compute_s > 0
    assert 1 <= scorer.max_in_flight <= 5


async def test_truncate_and_reject_and_fitting_prompts():
    prompt = list(range(300, 300 + 10_000))
    request = router_pb2.GenerateRequest(max_tokens=10)
    lc, scorer = make("truncate")
    out = await lc.fit(ListSource(prompt), request, "r")
    assert out.prompt == prompt[-(WINDOW - 10) :] and out.policy == "truncate"
    lc, _ = make("reject")
    with pytest.raises(InvalidArgumentError, match="4096-token context window"):
        await lc.fit(ListSource(prompt), request, "r")
    out = await lc.fit(ListSource(prompt[:100]), request, "r")
    assert out.policy == "" and out.prompt == prompt[:100] and scorer.max_in_flight == 0


async def test_knobs_that_do_not_fit_are_refused_naming_the_knob():
    lc, _ = make(kept_segments=4, segment_tokens=2000)
    with pytest.raises(InvalidArgumentError, match="segment_tokens"):
        await lc.fit(ListSource(list(range(300, 20_300))), router_pb2.GenerateRequest(max_tokens=10), "r")


def test_spool_reads_back_any_range_and_enforces_its_bound():
    spool = SpoolSource(max_tokens=1000)
    spool.append(list(range(400)))
    spool.append(list(range(400, 900)))
    assert spool.num_tokens == 900 and spool.read(395, 405) == list(range(395, 405))
    assert spool.read(850, 2000) == list(range(850, 900)) and spool.read(5, 5) == []
    with pytest.raises(InvalidArgumentError, match="max_prompt_tokens"):
        spool.append(list(range(200)))
    spool.close()


async def test_orchestration_memory_is_flat_in_the_prompt_length():
    import tracemalloc

    peaks = []
    for length in (32 * 1024, 256 * 1024):
        lc, _ = make(max_inflight_segments=8)
        spool = SpoolSource(10**7)
        for chunk in PasskeyCase(length, 0.5, "27182").chunks():
            spool.append(tokens.encode(chunk))
        tracemalloc.start()
        out = await lc.fit(spool, router_pb2.GenerateRequest(max_tokens=16), "r")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        spool.close()
        assert "27182" in tokens.decode(out.prompt)
    # 8x the prompt, the same peak: K kept windows + the windows in flight + the question.
    assert peaks[1] < 1.25 * peaks[0], peaks
    assert peaks[1] < 2 * 1024 * 1024  # the 256K-token prompt as a list alone would take 2 MiB
