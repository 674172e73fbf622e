"""`make chaos` bookkeeping: the request mix, how outcomes are classified and counted into a row."""

from __future__ import annotations

from benchmarks.chaos import markdown, parse
from benchmarks.chaos_load import Outcome, make_specs, p99
from benchmarks.chaos_scenarios import SCENARIOS, Ctx


def test_specs_are_deterministic_and_varied():
    a, b = make_specs(6, 32), make_specs(6, 32)
    assert a == b
    assert len({len(s.prompt) for s in a}) > 1 and [s.seed for s in a] == list(range(1000, 1006))


def test_outcomes_are_classified_and_wrong_tokens_counted():
    specs = make_specs(4, 3)
    baseline = {i: Outcome(i, 0.0, token_ids=[1, 2, 3], is_finished=True, e2e_s=1.0) for i in range(4)}
    ctx = Ctx("x", stack=None, specs=specs, baseline=baseline, timeout_s=5, fault_at_s=1,
              say=lambda _: None)  # fmt: skip
    outcomes = [
        Outcome(0, 0.0, token_ids=[1, 2, 3], is_finished=True, e2e_s=1.0),
        Outcome(1, 0.0, token_ids=[1, 2, 4], is_finished=True, e2e_s=2.0),  # wrong
        Outcome(2, 0.0, token_ids=[1], error="UNAVAILABLE"),  # lost mid-stream
        Outcome(3, 0.0, error="UNAVAILABLE"),  # failed before any token
        Outcome(4, 0.0, token_ids=[1], is_hung=True),  # index 4 compares with spec 0
        Outcome(5, 0.0, error="429"),
    ]
    row = ctx.row(outcomes, ["note"])
    assert (row["requests"], row["completed"], row["failed"], row["lost_streams"]) == (6, 2, 2, 1)
    assert (row["wrong_tokens"], row["hung"], row["p99_e2e_ms"]) == (1, 1, 2000.0)
    assert row["notes"] == "note; errors: 429, UNAVAILABLE"
    assert [o.kind for o in outcomes][-1] == "shed"


def test_every_issue_scenario_is_registered_and_the_table_renders():
    for name in ("decode-kill9", "decode-sigstop", "prefill-kill9", "prefill-sigstop", "redis-restart",
                 "fabric-node-down", "fabric-prefill-node-down", "overload-10x", "client-abandon",
                 "client-stall"):  # fmt: skip
        assert name in SCENARIOS and not SCENARIOS[name].needs
    assert SCENARIOS["redis-master-kill"].needs == "redis-cluster"
    args = parse(["--quick"])
    table = markdown([{"scenario": "baseline", "requests": 1, "notes": "a|b"}], args)
    assert "| baseline | 1 | a/b |" in table
    assert p99([1.0, 2.0, 3.0]) == 3.0 and p99([]) is None
