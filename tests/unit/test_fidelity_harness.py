"""The fidelity harness measures the model's point: what it times, and when it says the host fell short."""

from __future__ import annotations

import pytest

import benchmarks.fidelity as fidelity
from benchmarks.fidelity_decode import in_batch_tpot
from benchmarks.fidelity_host import HostUse, max_time_scale
from benchmarks.fidelity_model import ideal_prefill, num_batches
from benchmarks.fidelity_prefill import GATE_MAX_TOKENS, GATE_WALL_S, PROMPT_TOKENS, gate_tokens
from benchmarks.fidelity_report import Row
from supernode.hw.cost import prefill_batch_cost
from supernode.hw.specs import paper_prefill


def test_in_batch_tpot_runs_from_the_first_decode_chunk_to_the_last() -> None:
    # the prefill's token at 0, then decode chunks of 2, 1, 2 tokens every 0.1 wall s
    arrivals = [(0.0, 1), (5.0, 2), (5.1, 1), (5.2, 2)]
    begin, end, tpot = in_batch_tpot(arrivals, scale=0.5)
    assert (begin, end) == (5.0, 5.2)  # the wait for a batch slot (0 -> 5 s) is not in it
    assert tpot == pytest.approx(0.2 * 0.5 / 3)  # emulated s per token after the first decode chunk


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1, 0.05])
def test_the_gate_outlasts_the_hosts_queueing_time_and_no_more(scale: float) -> None:
    dep = paper_prefill()
    length = gate_tokens(dep, scale)

    def seconds(n: int) -> float:
        return prefill_batch_cost(dep, [n], [0]).total_us / 1e6

    assert PROMPT_TOKENS <= length <= GATE_MAX_TOKENS
    assert seconds(length) >= GATE_WALL_S * scale or length == GATE_MAX_TOKENS
    assert length == PROMPT_TOKENS or seconds(length // 2) < GATE_WALL_S * scale  # the shortest


def test_model_batch_count_is_the_bursts_distinct_finish_instants() -> None:
    dep = paper_prefill()
    budget = 16384 * 16
    assert num_batches(dep, [(4096, 0)] * 192, budget) == 3
    assert num_batches(dep, [(512, 3584)] * 192, budget) == 1  # 90% reuse: the burst is one batch
    total, ttft = ideal_prefill(dep, [(512, 3584)] * 192, budget)
    assert ttft == pytest.approx(total)  # one batch: every first token at its end


def test_host_keeps_up_only_without_lag_or_shortfall() -> None:
    assert HostUse(lag_pct=0.1).kept_up
    assert not HostUse(lag_pct=2.5).kept_up
    assert not HostUse(problem="the batch was not kept full (45.00 of 48 per die)").kept_up
    assert max_time_scale({"a": 1.0, "b": 0.25}) == 0.25
    assert max_time_scale({"a": 1.0, "b": 0.0}) == 0.0  # one scenario never kept up


def test_a_slow_return_path_skips_the_scales_it_would_still_fail_at(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[float] = []

    async def run_one(name: str, scale: float, quick: bool) -> tuple[list[Row], HostUse]:
        tried.append(scale)
        idle = 30.0 * scale  # the host's answers take a fixed wall time: their share falls with scale
        problem = "answers carried back too slowly" if idle >= 2.0 else ""
        return [Row(name, "m", 1.0, 1.0)], HostUse(idle_pct=idle, problem=problem)

    monkeypatch.setattr(fidelity, "run_one", run_one)
    _, use, scale, on_plan = fidelity.measure("prefill-cache-90", list(fidelity.SCALES), quick=True)
    assert tried == [1.0, 0.05] and scale == 0.05 and use.kept_up
    assert on_plan == 1.0  # no lag at 1.0: the step loop kept its plan there, the return path did not


def test_the_step_loop_scale_is_the_fastest_tried_without_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_one(name: str, scale: float, quick: bool) -> tuple[list[Row], HostUse]:
        return [Row(name, "m", 1.0, 1.0)], HostUse(lag_pct=5.0 if scale > 0.3 else 0.5)

    monkeypatch.setattr(fidelity, "run_one", run_one)
    _, _, scale, on_plan = fidelity.measure("decode-b96-kv4k", [1.0, 0.5, 0.25, 0.1], quick=True)
    assert scale == 0.25 and on_plan == 0.25
