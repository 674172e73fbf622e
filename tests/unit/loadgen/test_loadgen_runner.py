from __future__ import annotations

import time

import pytest
from loadgen_fakes import FakeClient

from supernode.loadgen.lengths import parse_length
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.runner import LoadPlan, run_load
from supernode.loadgen.targets import SdkTarget, StubTarget, error_kind
from supernode.loadgen.workloads import sessions, synthetic


async def test_open_loop_follows_arrivals_and_time_scale() -> None:
    specs = synthetic([0.0, 0.01, 0.02, 0.03], parse_length("4"), parse_length("3"), seed=0)
    async with StubTarget() as target:
        outcome = await run_load(target, specs, LoadPlan(False, 0, time_scale=0.5))  # 2 wall s per emulated s
    sends = [r.sent_s for r in outcome.results]
    assert sends == sorted(sends)
    assert sends[-1] == pytest.approx(0.06, abs=0.02)
    assert all(r.is_ok and r.num_output_tokens == 3 for r in outcome.results)
    assert outcome.achieved_rate_wall == pytest.approx(50, rel=0.3)


async def test_session_turns_wait_for_the_previous_turn() -> None:
    specs = sessions([0.0] * 8, parse_length("16"), parse_length("4"), 0.5, seed=0, sessions_in_flight=2)
    async with StubTarget(tpot_s=0.002) as target:
        outcome = await run_load(target, specs, LoadPlan(False, 0))
    done = {r.request_id: r for r in outcome.results}
    for spec, result in zip(specs, outcome.results, strict=True):
        if spec.after:
            assert result.sent_s >= done[spec.after].done_s


class _Counting(StubTarget):
    def __init__(self) -> None:
        super().__init__(tpot_s=0.001)
        self.in_flight = self.peak = 0

    async def send(self, spec: RequestSpec, result: RequestResult) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await super().send(spec, result)
        self.in_flight -= 1


@pytest.mark.parametrize("closed", [True, False])
async def test_concurrency_is_respected(closed: bool) -> None:
    specs = synthetic([0.0] * 40, parse_length("4"), parse_length("5"), seed=0)
    target = _Counting()
    outcome = await run_load(target, specs, LoadPlan(closed, 3))
    assert target.peak == 3 and all(r.is_ok for r in outcome.results)


async def test_sdk_target_takes_times_from_stats_and_scales_itl() -> None:
    client = FakeClient()
    specs = synthetic([0.0, 0.0], parse_length("40"), parse_length("6"), seed=0)
    specs.append(RequestSpec("bad", (999, 300), 4, 0.0))
    async with SdkTarget("addr", time_scale=10.0, client_factory=lambda a, t: client) as target:
        outcome = await run_load(target, specs, LoadPlan(True, 2, time_scale=10.0))
    ok, bad = outcome.results[0], outcome.results[2]
    assert ok.is_ok and (ok.ttft_s, ok.tpot_s, ok.e2e_s) == (0.05, 0.01, 0.5)
    assert (ok.num_prompt_tokens, ok.num_output_tokens, ok.num_cached_tokens) == (40, 6, 10)
    assert len(ok.itl_s) == 2 and all(x >= 0.01 for x in ok.itl_s)  # ~1 ms wall x 10
    assert not bad.is_ok and bad.error_kind == "RESOURCE_EXHAUSTED"
    assert client.calls[0]["ignore_eos"] is True and client.calls[0]["request_id"] == specs[0].request_id


def test_error_kinds() -> None:
    assert error_kind(TimeoutError()) == "TIMEOUT"
    assert error_kind(ConnectionRefusedError()) == "CONNECTION"
    assert error_kind(KeyError("x")) == "KeyError"


async def test_stub_is_fast() -> None:
    specs = synthetic([0.0] * 2000, parse_length("4"), parse_length("2"), seed=0)
    start = time.perf_counter()
    async with StubTarget() as target:
        await run_load(target, specs, LoadPlan(False, 0))
    assert time.perf_counter() - start < 2.0
