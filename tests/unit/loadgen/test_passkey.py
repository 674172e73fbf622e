"""The passkey workload, its report and plot, and the CLI's flag checks (no stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from supernode.loadgen import cli
from supernode.loadgen.passkey import FILLER, QUESTION, PasskeyCase, cases, needle
from supernode.loadgen.passkey_plot import heatmaps
from supernode.loadgen.passkey_run import Answer, summarise, write


def test_a_case_has_its_length_needle_depth_and_question_in_bounded_chunks():
    for depth in (0.0, 0.3, 1.0):
        case = PasskeyCase(50_000, depth, "12345")
        pieces = list(case.chunks(chunk_chars=4096))
        text = "".join(pieces)
        assert len(text) == case.length and max(len(p) for p in pieces) <= 4096
        assert text.endswith(QUESTION) and text.index(needle("12345")) == case.needle_at
        assert case.needle_at == int(case.num_filler * depth)
        haystack = text.replace(needle("12345"), "")[: -len(QUESTION)]
        assert haystack == (FILLER * (len(haystack) // len(FILLER) + 1))[: len(haystack)]
    assert PasskeyCase(100, 0.5, "12345").is_right(" 12345. Remember")
    assert not PasskeyCase(100, 0.5, "12345").is_right(" the pass key? T")


def test_cases_draw_a_key_per_point_reproducibly():
    a, b = cases((1000, 2000), (0.0, 1.0), seed=3), cases((1000, 2000), (0.0, 1.0), seed=3)
    assert a == b and len(a) == 4 and len({c.key for c in a}) > 1


def test_summary_counts_accuracy_and_writes_the_report(tmp_path: Path):
    answers = [
        Answer("xl3m", 8192, 0.0, "11111", " 11111.", True, True, ttft_s=1.0, num_scoring_tokens=100),
        Answer("xl3m", 8192, 1.0, "22222", " 22222.", True, False, ttft_s=3.0, num_scoring_tokens=300),
        Answer("truncate", 8192, 0.0, "11111", " the", False, True, ttft_s=0.1),
        Answer("truncate", 8192, 1.0, "22222", " 22222", True, False, ttft_s=0.1),
    ]
    results = summarise(answers, {8192: {"router": {"VmHWM": 60_000, "VmRSS": 50_000}}})
    results["context_window"] = 4096
    xl3m, trunc = results["policies"]["xl3m"]["8192"], results["policies"]["truncate"]["8192"]
    assert xl3m["accuracy"] == 1.0 and xl3m["mean_ttft_s"] == 2.0 and xl3m["mean_scoring_tokens"] == 200
    assert trunc["accuracy"] == 0.5 and trunc["accuracy_needle_before_last_window"] == 0.0
    assert list(results["policies"]) == ["xl3m", "truncate"]
    write(tmp_path, results)
    assert json.loads((tmp_path / "results.json").read_text())["policies"]["xl3m"]["8192"]["accuracy"] == 1.0
    assert "| xl3m | 8,192 | 100% |" in (tmp_path / "summary.md").read_text()
    assert heatmaps(results, tmp_path / "passkey.png").stat().st_size > 1000


def test_bench_passkey_refuses_an_unknown_policy(tmp_path: Path):
    app = typer.Typer()
    cli.register(app)

    @app.command("noop")
    def noop() -> None:
        return None

    args = ["bench", "--scenario", "passkey", "--policies", "summarise", "--target", "127.0.0.1:1"]
    result = CliRunner().invoke(app, [*args, "--reports", str(tmp_path)])
    assert result.exit_code != 0 and "summarise" in result.output


def test_varied_filler_is_reproducible_and_keeps_the_needle_where_it_belongs():
    case = PasskeyCase(30_000, 0.4, "54321", "varied")
    small, big = "".join(case.chunks(chunk_chars=1000)), "".join(case.chunks())
    assert small == big and len(small) == case.length and small.endswith(QUESTION)
    assert small.index(needle("54321")) == case.needle_at
    assert FILLER not in small and " key " in small  # the question's words are everywhere
    with pytest.raises(ValueError, match="filler"):
        cases((1000,), (0.5,), 0, "lorem")
