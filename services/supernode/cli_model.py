"""`supernode model prefill|decode` and `supernode paper`: price a configuration with the cost model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from supernode.hw import memory
from supernode.hw.cost import (
    PrefillWorkload,
    decode_step_cost,
    max_batch_per_die_for_tpot,
    moe_layer_us,
    prefill_batch_cost,
)
from supernode.hw.fit import compare, fit
from supernode.hw.paper import paper_rows
from supernode.hw.prefill import prefill_moe_layer_cost
from supernode.hw.result import Cost
from supernode.hw.specs import (
    HARDWARE,
    SHIPPED,
    DecodeDeployment,
    Hardware,
    Precision,
    PrefillDeployment,
    fit_experts_per_die,
)

model_app = typer.Typer(help="Price one prefill batch or decode step with the hardware cost model.")
_console = Console()


def _hardware(name: str) -> Hardware:
    if name not in HARDWARE:
        raise typer.BadParameter(f"unknown hardware {name!r}; choose from {', '.join(HARDWARE)}")
    return HARDWARE[name]


def _dies(hw: Hardware, given: int | None) -> int:
    """Dies per device: as given, else the hardware's (2 for a 910C package, 1 for a GPU)."""
    if given is not None and given < 1:
        raise typer.BadParameter("--dies-per-npu must be >= 1")
    return given if given is not None else hw.dies_per_device


def _precision(value: str) -> Precision:
    if value not in ("int8", "bf16"):
        raise typer.BadParameter("--precision must be int8 or bf16")
    return "int8" if value == "int8" else "bf16"


def _experts_per_die(ep: int, redundant: int, given: int | None, shared_local: bool) -> int:
    """Slots per die: as given, else the fewest that hold 256 routed + redundant + the shared expert."""
    return given if given is not None else fit_experts_per_die(ep, redundant, shared_local)


def _print(title: str, summary: dict[str, Any], cost: Cost, as_json: bool) -> None:
    summary["fitted"] = asdict(SHIPPED)
    if as_json:
        typer.echo(json.dumps({**summary, "breakdown_us": cost.breakdown_us, "busy_us": cost.busy_us}))
        return
    head = Table(title=title, show_header=False)
    for key, value in summary.items():
        if key == "fitted":
            value = ", ".join(f"{k}={v:g}" for k, v in value.items())
        head.add_row(key, f"{value:,.2f}" if isinstance(value, float) else str(value))
    parts = Table(title="per-op breakdown (us)")
    for col in ("part", "critical path", "busy", "share"):
        parts.add_column(col, justify="left" if col == "part" else "right")
    for name, t in cost.breakdown_us.items():
        share = t / cost.total_us * 100 if cost.total_us else 0.0
        parts.add_row(name, f"{t:,.0f}", f"{cost.busy_us.get(name, 0.0):,.0f}", f"{share:.1f}%")
    parts.add_row("total", f"{cost.total_us:,.0f}", "", "100%")
    _console.print(head)
    _console.print(parts)


@model_app.command("prefill")
def prefill_cmd(
    hardware: str = typer.Option("ascend-910c", help="ascend-910c | h800 | h100"),
    npus: int = typer.Option(16, help="Devices per prefill instance."),
    dies_per_npu: int | None = typer.Option(None, help="Dies per device (default: 2 on Ascend, 1 on GPUs)."),
    ep: int | None = typer.Option(None, help="EP degree in dies (default: every die of the instance)."),
    experts_per_device: int | None = typer.Option(None, help="Expert slots per die, shared copies included."),
    redundant: int = typer.Option(32, help="Redundant routed-expert replicas."),
    attention: str = typer.Option("hybrid", help="hybrid (SP-TP-SP) | dp"),
    prompt_len: int = typer.Option(4096, help="Tokens per prompt."),
    tokens_per_npu: int = typer.Option(16384, help="Prompt tokens per NPU per batch."),
    cache_hit: float = typer.Option(0.0, help="Share of each prompt found in the context cache."),
    microbatch: bool = typer.Option(True, "--microbatch/--no-microbatch"),
    precision: str = typer.Option("int8", help="int8 (W8A8) | bf16"),
    eplb: str = typer.Option("perfect", help="perfect | default (paper's default expert load)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Price one prefill batch of equal prompts."""
    hw = _hardware(hardware)
    dies = _dies(hw, dies_per_npu)
    ep_size = ep or npus * dies
    if attention not in ("hybrid", "dp") or eplb not in ("perfect", "default"):
        raise typer.BadParameter("--attention is hybrid|dp and --eplb is perfect|default")
    prec = _precision(precision)
    dep = PrefillDeployment(
        num_npus=npus,
        dies_per_npu=dies,
        ep_size=ep_size,
        experts_per_die=_experts_per_die(ep_size, redundant, experts_per_device, True),
        num_redundant_experts=redundant,
        attention="hybrid" if attention == "hybrid" else "dp",
        attn_precision=prec,
        moe_precision=prec,
        microbatches=2 if microbatch else 1,
        expert_imbalance=SHIPPED.default_eplb_hot_factor if eplb == "default" else 1.0,
        hardware=hw,
    )
    try:
        new, cached = PrefillWorkload(prompt_len, tokens_per_npu, cache_hit).sequences(dep)
        cost = prefill_batch_cost(dep, new, cached)
        layer = prefill_moe_layer_cost(dep, new, cached)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    tokens = sum(new) + sum(cached)
    per_die = tokens / dep.num_dies
    mem_gb = memory.prefill_memory_bytes(dep, sum(new) / dep.num_dies, per_die) / 1e9
    summary = {
        "tokens_per_s_per_npu": tokens / npus / (cost.total_us / 1e6),
        "batch_time_ms": cost.total_us / 1e3,
        "batch_per_npu": len(new) / npus,
        "tokens_per_npu": tokens / npus,
        "layer_time_us": layer.total_us,
        "memory_gb_per_die": mem_gb,
        "fits_in_hbm": mem_gb <= dep.hardware.hbm_bytes / 1e9,
        "experts_per_die": dep.experts_per_die,
    }
    _print(f"prefill on {npus} x {hardware}, EP{ep_size}", summary, cost, as_json)


@model_app.command("decode")
def decode_cmd(
    hardware: str = typer.Option("ascend-910c", help="ascend-910c | h800 | h100"),
    npus: int = typer.Option(160, help="Devices per decode instance."),
    dies_per_npu: int | None = typer.Option(None, help="Dies per device (default: 2 on Ascend, 1 on GPUs)."),
    ep: int | None = typer.Option(None, help="EP degree in dies (default: every die of the instance)."),
    experts_per_device: int | None = typer.Option(None, help="Expert slots per die, shared copies included."),
    redundant: int = typer.Option(32, help="Redundant routed-expert replicas."),
    batch_per_npu: int = typer.Option(96, help="Sequences per NPU (split evenly over its dies)."),
    kv_len: int = typer.Option(4096, help="KV length of every sequence (tokens)."),
    mtp: bool = typer.Option(True, "--mtp/--no-mtp"),
    mtp_depth: int = typer.Option(1, help="Speculative tokens per step when MTP is on."),
    accept: float = typer.Option(0.7, help="Acceptance of each speculative token."),
    microbatch: bool | None = typer.Option(
        None,
        "--microbatch/--no-microbatch",
        help="Force two microbatches or one batch (default: the faster).",
    ),
    attn_aic: int | None = typer.Option(
        None, help="AIC cores of the attention stream, AIV twice that (default: the split that is fastest)."
    ),
    precision: str = typer.Option("int8", help="int8 (W8A8) | bf16"),
    imbalance: float = typer.Option(1.0, help="Hottest routed-expert load over the mean."),
    tpot_slo: float | None = typer.Option(None, help="Find the largest batch meeting this TPOT (ms)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Price one decode step; with --tpot-slo, at the largest batch that meets the SLO and fits."""
    hw = _hardware(hardware)
    dies_per_npu = _dies(hw, dies_per_npu)
    ep_size = ep or npus * dies_per_npu
    prec = _precision(precision)
    dep = DecodeDeployment(
        num_npus=npus,
        dies_per_npu=dies_per_npu,
        ep_size=ep_size,
        experts_per_die=_experts_per_die(ep_size, redundant, experts_per_device, False),
        num_redundant_experts=redundant,
        attn_precision=prec,
        moe_precision=prec,
        microbatch=microbatch,
        aic_split=attn_aic,
        mtp_depth=mtp_depth if mtp else 0,
        mtp_accept=accept,
        expert_imbalance=imbalance,
        hardware=hw,
    )
    batch = batch_per_npu // dies_per_npu
    try:
        if tpot_slo is not None:
            batch = max_batch_per_die_for_tpot(dep, kv_len, tpot_slo)
        dep = replace(dep, max_batch_per_die=max(batch, 1))
        cost = decode_step_cost(dep, batch, [kv_len] * batch)
        layer = moe_layer_us(dep, batch, kv_len)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    tpot = cost.total_us / 1e3 / dep.tokens_per_step
    summary: dict[str, Any] = {
        "tokens_per_s_per_npu": batch * dies_per_npu / (tpot / 1e3) if batch else 0.0,
        "batch_per_npu": batch * dies_per_npu,
        "tpot_ms": tpot,
        "step_time_ms": cost.total_us / 1e3,
        "layer_time_us": layer.total_us,
        "memory_gb_per_die": memory.decode_memory_bytes(dep, batch, kv_len) / 1e9,
        "kv_capacity_tokens_per_die": memory.kv_capacity_tokens_per_die(dep),
        "experts_per_die": dep.experts_per_die,
        "mode": cost.mode,
        "aic_split": cost.aic_split,
    }
    if tpot_slo is not None:
        summary["tpot_slo_ms"] = tpot_slo
    _print(f"decode on {npus} x {hardware}, EP{ep_size}", summary, cost, as_json)


def paper_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """The paper's headline results next to the model's."""
    rows = paper_rows()
    if as_json:
        out = [
            {"name": r.name, "paper": r.paper, "model": r.model, "unit": r.unit, "error_pct": r.error_pct}
            for r in rows
        ]
        typer.echo(json.dumps(out))
        return
    table = Table(title="CloudMatrix-Infer headline results: paper vs model")
    for col in ("result", "paper", "model", "unit", "error"):
        table.add_column(col, justify="left" if col in ("result", "unit") else "right")
    for r in rows:
        table.add_row(r.name, f"{r.paper:,.1f}", f"{r.model:,.1f}", r.unit, f"{r.error_pct:+.1f}%")
    _console.print(table)


def calibrate_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Refit the FITTED constants from their training rows (Ascend only) and show them next to the shipped."""
    rows = compare(fit())
    if as_json:
        typer.echo(json.dumps([{"name": n, "fitted": f, "shipped": s} for n, f, s in rows]))
        return
    table = Table(title="FITTED constants: refit from the training rows vs shipped in hw/calibration.py")
    for col in ("constant", "fitted", "shipped", "same"):
        table.add_column(col, justify="left" if col == "constant" else "right")
    for name, fitted, shipped in rows:
        table.add_row(name, f"{fitted:g}", f"{shipped:g}", "yes" if fitted == shipped else "NO")
    _console.print(table)


def register(app: typer.Typer) -> None:
    """Adds the `model` group and the `paper` and `calibrate` commands to `app`."""
    app.add_typer(model_app, name="model")
    app.command("paper")(paper_cmd)
    app.command("calibrate")(calibrate_cmd)
