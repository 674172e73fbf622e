"""The passkey benchmark's entry point (`supernode bench --scenario passkey`, `make load-xl3m`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from supernode.loadgen.passkey import DEPTHS, FILLERS, HUGE_LENGTHS, LENGTHS, chars_per_token
from supernode.loadgen.passkey_plot import heatmaps
from supernode.loadgen.passkey_run import Answer, run_cases, summarise, write
from supernode.loadgen.suite import run_folder
from supernode.runtime import tokenization
from supernode.runtime.config import Settings

POLICIES = ("xl3m", "truncate")


@contextlib.contextmanager
def _stack(target: str | None, window: int, time_scale: float | None) -> Iterator[tuple[str, dict[str, int]]]:
    """A local stack with the router's window set to `window` (or the router at `target`)."""
    if target:
        yield target, {}
        return
    from supernode.launcher import LocalStack, StackConfig

    env = {"SUPERNODE_ROUTER__MAX_CONTEXT_TOKENS": str(window)}
    if time_scale:
        env["SUPERNODE_RUNTIME__TIME_SCALE"] = str(time_scale)
    stack = LocalStack(StackConfig(num_prefill=2, num_decode=1, ephemeral_ports=True, env=env))
    Console().print(f"starting a local stack with a {window}-token window (logs in {stack.log_dir})")
    try:
        asyncio.run(stack.start())
        pids = {
            p.name: p.popen.pid for p in stack.procs if p.name.startswith(("router", "prefill", "decode"))
        }
        yield stack.router_address, pids
    finally:
        stack.stop()


def run_passkey(
    *,
    target: str | None,
    context_window: int,
    lengths: tuple[int, ...] | None,
    depths: tuple[float, ...] | None,
    policies: tuple[str, ...] | None,
    huge: bool,
    seed: int,
    time_scale: float | None,
    timeout_s: float,
    reports: Path,
    plots: bool,
    filler: str = "repeat",
) -> Path:
    lengths = lengths or (LENGTHS + HUGE_LENGTHS if huge else LENGTHS)
    depths = depths or DEPTHS
    policies = policies or POLICIES
    if filler not in FILLERS:
        raise ValueError(f"--filler: {filler} is not one of {', '.join(FILLERS)}")
    for p in policies:
        if p not in ("xl3m", "truncate", "reject"):
            raise ValueError(f"--policies: {p} is not one of xl3m, truncate, reject")
    console = Console()
    folder = run_folder(reports, "passkey")

    def show(a: Answer) -> None:
        mark = "[green]right[/]" if a.is_right else f"[red]wrong[/] {a.error or repr(a.answer[:24])}"
        console.print(
            f"{a.policy:8} {a.length:>9,} tokens depth {a.depth:4.0%}: {mark}  TTFT {a.ttft_s:.2f} s "
            f"(scoring {a.scoring_s:.2f} s, {a.num_segments} segments)  wall {a.wall_s:.1f} s"
        )

    # Lengths are in the server's tokens: the haystack is sized with the tokenizer the stack counts with.
    cpt = chars_per_token(tokenization.tokenizer(Settings()).encode)
    with _stack(target, context_window, time_scale) as (address, pids):
        answers, memory = asyncio.run(
            run_cases(
                address, lengths, depths, policies, context_window, seed, timeout_s, pids, show, filler, cpt
            )
        )
    results = summarise(answers, memory)
    results["context_window"] = context_window
    results["filler"] = filler
    results["chars_per_token"] = round(cpt, 3)
    write(folder, results)
    if plots:
        heatmaps(results, folder / "passkey.png")
    console.print((folder / "summary.md").read_text())
    console.print(f"report: {folder / 'summary.md'} (results.json and passkey.png beside it)")
    return folder
