from __future__ import annotations

import pytest
from cluster_target import run_on_cluster
from loadgen_fakes import FakeClient

from supernode.loadgen.lengths import parse_length
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.runner import LoadPlan, RunOutcome, run_load
from supernode.loadgen.targets import SdkTarget, error_kind
from supernode.loadgen.workloads import sessions, synthetic
from supernode.sim.target import InprocTarget


def test_open_loop_follows_arrivals_and_time_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = synthetic([0.0, 0.01, 0.02, 0.03], parse_length("4"), parse_length("3"), seed=0)

    async def body(target: InprocTarget) -> RunOutcome:
        return await run_load(target, specs, LoadPlan(False, 0, time_scale=0.5))  # 2 s per emulated s

    outcome = run_on_cluster(monkeypatch, body)
    sends = [r.sent_s - outcome.results[0].sent_s for r in outcome.results]
    assert sends == pytest.approx([0.0, 0.02, 0.04, 0.06], abs=1e-6)
    assert all(r.is_ok and r.num_output_tokens == 3 for r in outcome.results)


def test_session_turns_wait_for_the_previous_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = sessions([0.0] * 8, parse_length("16"), parse_length("4"), 0.5, seed=0, sessions_in_flight=2)
    assert any(spec.after for spec in specs), "the workload must hold follow-up turns"

    async def body(target: InprocTarget) -> RunOutcome:
        return await run_load(target, specs, LoadPlan(False, 0))

    outcome = run_on_cluster(monkeypatch, body)
    done = {r.request_id: r for r in outcome.results}
    assert all(r.is_ok for r in outcome.results)
    for spec, result in zip(specs, outcome.results, strict=True):
        if spec.after:
            assert result.sent_s >= done[spec.after].done_s


class _Counting(InprocTarget):
    in_flight = peak = 0

    async def send(self, spec: RequestSpec, result: RequestResult) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await super().send(spec, result)
        self.in_flight -= 1


@pytest.mark.parametrize("closed", [True, False])
def test_concurrency_is_respected(monkeypatch: pytest.MonkeyPatch, closed: bool) -> None:
    specs = synthetic([0.0] * 40, parse_length("4"), parse_length("5"), seed=0)

    async def body(target: InprocTarget) -> tuple[int, RunOutcome]:
        outcome = await run_load(target, specs, LoadPlan(closed, 3))
        return target.peak, outcome  # type: ignore[attr-defined]

    peak, outcome = run_on_cluster(monkeypatch, body, _Counting)
    assert peak == 3 and all(r.is_ok and r.num_output_tokens == 5 for r in outcome.results)


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
