"""`supernode model` and `supernode paper` through a throwaway Typer app."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from supernode.cli_model import register

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _json(*args: str) -> object:
    result = runner.invoke(_app(), list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_paper_json_rows() -> None:
    rows = _json("paper", "--json")
    assert isinstance(rows, list) and len(rows) >= 4
    for row in rows:
        assert set(row) >= {"name", "paper", "model", "unit", "error_pct"}


def test_paper_table() -> None:
    result = runner.invoke(_app(), ["paper"])
    assert result.exit_code == 0 and "prefill" in result.output


def test_model_decode_json() -> None:
    out = _json("model", "decode", "--batch-per-npu", "96", "--kv-len", "4096", "--json")
    assert isinstance(out, dict)
    keys = {"tokens_per_s_per_npu", "batch_per_npu", "tpot_ms", "layer_time_us", "memory_gb_per_die"}
    assert keys <= set(out)
    assert out["batch_per_npu"] == 96
    assert sum(out["breakdown_us"].values()) > 0


def test_model_decode_slo() -> None:
    out = _json("model", "decode", "--tpot-slo", "50", "--json")
    assert isinstance(out, dict)
    assert out["tpot_ms"] <= 50 and out["memory_gb_per_die"] <= 64 and out["batch_per_npu"] > 0


def test_model_decode_flags() -> None:
    args = ["--no-mtp", "--no-microbatch", "--precision", "bf16", "--npus", "80", "--accept", "0.5"]
    out = _json("model", "decode", *args, "--json")
    assert isinstance(out, dict) and out["tpot_ms"] > 0


def test_model_prefill_json() -> None:
    base = ["model", "prefill", "--prompt-len", "4096", "--tokens-per-npu", "16384", "--json"]
    perfect = _json(*base)
    default = _json(*base, "--eplb", "default")
    assert isinstance(perfect, dict) and isinstance(default, dict)
    assert {"tokens_per_s_per_npu", "batch_time_ms", "layer_time_us", "memory_gb_per_die"} <= set(perfect)
    assert default["tokens_per_s_per_npu"] < perfect["tokens_per_s_per_npu"]
    cached = _json(*base, "--cache-hit", "0.5")
    assert isinstance(cached, dict) and cached["batch_time_ms"] < perfect["batch_time_ms"]


def test_model_prefill_table_and_bad_input() -> None:
    assert runner.invoke(_app(), ["model", "prefill", "--no-microbatch"]).exit_code == 0
    assert runner.invoke(_app(), ["model", "prefill", "--precision", "fp4"]).exit_code != 0
    assert runner.invoke(_app(), ["model", "decode", "--hardware", "tpu"]).exit_code != 0


def test_model_decode_json_says_mode_split_and_fitted() -> None:
    out = _json("model", "decode", "--batch-per-npu", "96", "--kv-len", "4096", "--json")
    assert isinstance(out, dict)
    assert out["mode"] == "microbatch" and 1 <= out["aic_split"] < 24
    assert set(out["fitted"]) == {"attn_serving_eff", "prefill_link_eff", "default_eplb_hot_factor"}
    single = _json("model", "decode", "--batch-per-npu", "96", "--no-microbatch", "--json")
    assert isinstance(single, dict) and single["mode"] == "single" and single["aic_split"] is None
    assert single["tpot_ms"] >= out["tpot_ms"]
    fixed = _json("model", "decode", "--batch-per-npu", "96", "--attn-aic", "16", "--microbatch", "--json")
    assert isinstance(fixed, dict) and fixed["aic_split"] == 16


def test_gpu_presets_default_to_one_die_per_device() -> None:
    out = _json("model", "decode", "--hardware", "h800", "--npus", "144", "--json")
    assert isinstance(out, dict)
    assert out["experts_per_die"] == 3  # EP144: 256 routed + 32 redundant + shared over 144 GPUs
    two = _json("model", "decode", "--hardware", "h800", "--npus", "144", "--dies-per-npu", "2", "--json")
    assert isinstance(two, dict) and two["experts_per_die"] == 2  # 288 dies only when asked
    pre = _json("model", "prefill", "--hardware", "h100", "--npus", "32", "--attention", "dp", "--json")
    assert isinstance(pre, dict) and pre["experts_per_die"] == 10


def test_calibrate_prints_fitted_next_to_shipped() -> None:
    rows = _json("calibrate", "--json")
    assert isinstance(rows, list) and len(rows) == 3
    for row in rows:
        assert row["fitted"] == row["shipped"], row
