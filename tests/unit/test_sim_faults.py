"""`supernode sim --fault`: instances killed or frozen and nodes' links taken down at emulated instants,
on the whole in-process cluster; the router's retries and migrations are the engines' own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from supernode.cli import app
from supernode.loadgen.scenarios import preset
from supernode.loadgen.stats import Deployment
from supernode.sim.deployment import SimDeployment
from supernode.sim.faults import FaultSpec, check_faults, parse_fault
from supernode.sim.run import SimOptions, SimOutcome, simulate

TWO_BY_TWO = SimDeployment(num_prefill=2, prefill_npus=16, num_decode=2, decode_npus=16)


def _cfg(n: int = 48):
    return preset("mixed", Deployment(TWO_BY_TWO.num_prefill_npus, TWO_BY_TWO.num_decode_npus)).override(
        num_requests=n, request_rates=(8.0,), output_len="uniform:60:200", input_len="lognormal:300:0.5"
    )


def _run(tmp_path: Path, name: str, *faults: str, tokens: bool = False) -> SimOutcome:
    options = SimOptions(
        materialise_tokens=tokens, write_pngs=False, faults=tuple(parse_fault(f) for f in faults)
    )
    return simulate(_cfg(), TWO_BY_TWO, tmp_path / name, options)


def _failed(out: SimOutcome) -> list[str]:
    return [r.error_message for rep in out.suite.reports for r in rep.results if not r.is_ok]


@pytest.mark.parametrize(
    "text, spec",
    [
        ("prefill-3:kill@12.5", FaultSpec("prefill", 3, "kill", 12.5)),
        ("decode-0:stop@60", FaultSpec("decode", 0, "stop", 60.0)),
        ("node-7:down@10+30", FaultSpec("node", 7, "degrade", 10.0, 0.0, 30.0)),
        ("node-2:0.25@5+1.5", FaultSpec("node", 2, "degrade", 5.0, 0.25, 1.5)),
        ("decode-1:kill@3600000", FaultSpec("decode", 1, "kill", 3.6e6)),  # no exponent written back
        ("prefill-0:kill@5+10", FaultSpec("prefill", 0, "kill", 5.0, 0.0, 10.0)),  # back after 10 s
    ],
)
def test_a_fault_is_read_and_written_back_the_same(text: str, spec: FaultSpec):
    assert parse_fault(text) == spec
    assert parse_fault(str(spec)) == spec


@pytest.mark.parametrize(
    "text, rule",
    [
        ("prefill-0:kill", "a fault is prefill-<i>:kill@<t>"),
        ("router-0:kill@5", "a fault is prefill-<i>:kill@<t>"),
        ("prefill-0:pause@5", "killed ('kill') or frozen ('stop')"),
        ("prefill-0:kill@5+0", "comes back after d > 0 emulated s"),
        ("node-1:down@5", "a node fault needs a window"),
        ("node-1:1.5@5+2", "must be in (0, 1)"),
        ("node-1:half@5+2", "'down' or kept at a factor"),
        ("prefill-0:kill@1e3", "a fault is prefill-<i>:kill@<t>"),
        ("node-0:down@1.2.3+1", "a fault is prefill-<i>:kill@<t>"),
    ],
)
def test_a_bad_fault_is_refused_naming_the_rule(text: str, rule: str):
    with pytest.raises(ValueError) as err:
        parse_fault(text)
    assert text in str(err.value) and rule in str(err.value)


def test_faults_the_deployment_cannot_take_are_refused_before_the_run(tmp_path: Path):
    def check(*texts: str, tokens: bool = True) -> None:
        check_faults(tuple(parse_fault(t) for t in texts), 2, 2, 48, tokens)

    with pytest.raises(ValueError, match="has 2 prefill instances"):
        check("prefill-2:kill@1")
    with pytest.raises(ValueError, match="has 48 node"):
        check("node-48:down@1+1")
    with pytest.raises(ValueError, match="decode-1 is still down from an earlier fault then"):
        check("decode-1:kill@1", "decode-1:stop@2")
    with pytest.raises(ValueError, match="prefill-0 is still down from an earlier fault then"):
        check("prefill-0:stop@2.5", "prefill-0:kill@1+2")  # checked in time order
    check("prefill-0:kill@1+2", "prefill-0:stop@3", "prefill-1:kill@1")  # back at 3, down again
    with pytest.raises(ValueError, match="a decode fault needs --tokens"):
        check("decode-0:kill@1", tokens=False)
    with pytest.raises(ValueError, match="has 2 prefill instances"):
        simulate(_cfg(), TWO_BY_TWO, tmp_path, SimOptions(faults=(parse_fault("prefill-5:kill@1"),)))
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_a_killed_prefill_instance_stops_and_the_router_sends_its_work_elsewhere(tmp_path: Path):
    base = _run(tmp_path, "base")
    out = _run(tmp_path, "kill", "prefill-0:kill@1.5")
    assert _failed(out) == [] and _failed(base) == []
    (entry,) = out.sim["faults"]
    assert entry["fault"] == "prefill-0:kill@1.5" and entry["applied_s"] == 1.5
    assert entry["calls_cut"] >= 1  # a prompt it was computing, retried on prefill-1 (none failed)
    steps, base_steps = out.sim["instance_steps"], base.sim["instance_steps"]
    assert steps["prefill-0"] < base_steps["prefill-0"] / 2  # it ran for the first 1.5 s of about 6
    assert steps["prefill-1"] > base_steps["prefill-1"]  # and the other took its share


def test_a_killed_prefill_instance_that_comes_back_starts_empty_and_takes_work_again(tmp_path: Path):
    gone = _run(tmp_path, "gone", "prefill-0:kill@1.5")
    back = _run(tmp_path, "back", "prefill-0:kill@1.5+1")
    assert _failed(back) == []
    (entry,) = back.sim["faults"]
    assert entry["applied_s"] == 1.5 and entry["back_s"] == 2.5
    # Both engines' steps count for the instance: the first one's 1.5 s and the new one's after 2.5 s.
    assert back.sim["instance_steps"]["prefill-0"] > gone.sim["instance_steps"]["prefill-0"]
    assert (
        "prefill-0:kill@1.5+1 at 1.5 emulated s: calls cut" in (tmp_path / "back" / "summary.md").read_text()
    )
    assert "back at 2.5 s" in (tmp_path / "back" / "summary.md").read_text()


def test_a_frozen_decode_that_carries_on_serves_again_with_the_same_tokens(tmp_path: Path):
    base = _run(tmp_path, "base", tokens=True)
    gone = _run(tmp_path, "gone", "decode-0:stop@3", tokens=True)
    back = _run(tmp_path, "back", "decode-0:stop@3+1", tokens=True)
    assert _failed(back) == [] and back.tokens == base.tokens
    assert back.sim["faults"][0]["back_s"] == 4.0
    assert back.sim["instance_steps"]["decode-0"] > gone.sim["instance_steps"]["decode-0"]


@pytest.mark.parametrize("action", ["kill", "stop"])
def test_requests_on_a_broken_decode_instance_move_and_keep_their_tokens(tmp_path: Path, action: str):
    base = _run(tmp_path, "base", tokens=True)
    out = _run(tmp_path, action, f"decode-0:{action}@3", tokens=True)
    assert _failed(out) == []
    (entry,) = out.sim["faults"]
    in_flight = entry["calls_cut" if action == "kill" else "calls_unanswered"]
    assert in_flight > 0  # streams were running on it at 3 s
    assert out.sim["requests_migrated"] >= in_flight and out.sim["migrations"] >= in_flight
    assert out.tokens == base.tokens  # every client sees exactly the fault-free stream
    assert out.sim["instance_steps"]["decode-0"] < base.sim["instance_steps"]["decode-0"]


def test_a_node_down_for_a_window_is_routed_around_and_counted(tmp_path: Path):
    base = _run(tmp_path, "base")
    out = _run(tmp_path, "node", "node-0:down@1+3")
    assert _failed(out) == []
    (entry,) = out.sim["faults"]
    assert entry["fault"] == "node-0:down@1+3" and entry["applied_s"] == 1.0 and "transfers_failed" in entry
    assert out.sim["instance_nodes"]["prefill-0"] == [0, 1]  # 32 dies, 16 per node
    # prefill-0's dies are on node 0: the router keeps new prompts off it while the window lasts
    assert out.sim["instance_steps"]["prefill-0"] < base.sim["instance_steps"]["prefill-0"]


def test_a_fault_after_the_run_is_reported_as_not_reached(tmp_path: Path):
    out = _run(tmp_path, "late", "prefill-1:kill@9999")
    assert out.sim["faults"] == [] and out.sim["faults_not_reached"] == ["prefill-1:kill@9999"]
    assert "prefill-1:kill@9999: not reached" in (tmp_path / "late" / "summary.md").read_text()


def test_the_cli_takes_faults_and_says_what_they_did(tmp_path: Path):
    args = ["sim", "--prefill-instances", "2", "--prefill-npus", "16", "--decode-npus", "16"]
    args += [
        "--num-requests",
        "20",
        "--request-rate",
        "8",
        "--input-len",
        "fixed:256",
        "--output-len",
        "fixed:40",
    ]
    args += ["--reports", str(tmp_path), "--no-plots", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--fault", "prefill-1:kill@1", "--fault", "node-5:0.5@1+2"])
    assert result.exit_code == 0, result.output
    assert "fault prefill-1:kill@1 at 1.0 emulated s: calls cut" in result.output
    assert "fault node-5:0.5@1+2 at 1.0 emulated s: transfers failed" in result.output
    (results_file,) = tmp_path.glob("*/results.json")
    sim = json.loads(results_file.read_text())["sim"]
    assert [f["fault"] for f in sim["faults"]] == ["prefill-1:kill@1", "node-5:0.5@1+2"]
    refused = CliRunner().invoke(app, [*args, "--fault", "decode-0:kill@1"], terminal_width=200)
    assert refused.exit_code == 2
    assert "a decode fault needs --tokens" in " ".join(refused.output.replace("│", " ").split())
