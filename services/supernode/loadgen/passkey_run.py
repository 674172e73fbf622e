"""`supernode bench --scenario passkey`: the passkey benchmark against the live stack.

Starts a local stack whose router window is `--context-window` (unless `--target` names a running
router), sends every (length, depth) case once per policy through the SDK's chunked upload, and
writes results.json, summary.md and passkey.png into a run folder. Between lengths it reads the peak
resident memory (VmHWM) of the router and the workers, so "memory flat in the prompt length" is
measured, not assumed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from supernode.loadgen.passkey import PasskeyCase, cases, needle
from supernode.sdk import AsyncClient, SupernodeError

MAX_TOKENS = 16  # the continuation: " NNNNN. Remember it" fits


@dataclass(slots=True)
class Answer:
    policy: str
    length: int
    depth: float
    key: str
    answer: str
    is_right: bool
    is_before_last_window: bool  # the needle starts before the window truncate keeps
    ttft_s: float = 0.0
    scoring_s: float = 0.0
    num_segments: int = 0
    num_scoring_tokens: int = 0
    scoring_compute_s: float = 0.0
    prefill_compute_s: float = 0.0
    num_final_prompt_tokens: int = 0
    wall_s: float = 0.0
    error: str = ""


def read_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


async def ask(client: AsyncClient, case: PasskeyCase, policy: str, window: int, timeout_s: float) -> Answer:
    room = window - MAX_TOKENS
    # In characters: the window truncate keeps ends `room` tokens before the end of the prompt.
    before = case.needle_at + len(needle(case.key)) < case.num_chars - room * case.chars_per_token
    out = Answer(policy, case.length, case.depth, case.key, "", False, before)
    started = time.perf_counter()
    try:
        text, stats = "", None
        async for chunk in client.generate(
            prompt_chunks=case.chunks(), max_tokens=MAX_TOKENS, long_context=policy, timeout_s=timeout_s
        ):
            text += chunk.text
            stats = chunk.stats or stats
    except SupernodeError as err:
        out.error = f"{err.code}: {err.message}"
        return out
    out.wall_s = time.perf_counter() - started
    out.answer, out.is_right = text, case.is_right(text)
    if stats is not None:
        out.ttft_s, out.scoring_s = stats.ttft_s, stats.scoring_s
        out.num_segments, out.num_scoring_tokens = stats.num_segments_scored, stats.num_scoring_tokens
        out.scoring_compute_s, out.prefill_compute_s = stats.scoring_compute_s, stats.prefill_compute_s
        out.num_final_prompt_tokens = stats.num_final_prompt_tokens
    return out


async def run_cases(
    address: str,
    lengths: Sequence[int],
    depths: Sequence[float],
    policies: Sequence[str],
    window: int,
    seed: int,
    timeout_s: float,
    pids: dict[str, int],
    on_answer: Callable[[Answer], None] | None = None,
    filler: str = "repeat",
    chars_per_token: float = 1.0,
) -> tuple[list[Answer], dict[int, dict[str, dict[str, int]]]]:
    answers: list[Answer] = []
    memory: dict[int, dict[str, dict[str, int]]] = {}
    async with AsyncClient(address, timeout_s=timeout_s) as client:
        for length in sorted(lengths):
            for policy in policies:
                for case in cases((length,), tuple(depths), seed, filler, chars_per_token):
                    answer = await ask(client, case, policy, window, timeout_s)
                    answers.append(answer)
                    if on_answer is not None:
                        on_answer(answer)
            memory[length] = {name: read_memory_kb(pid) for name, pid in pids.items()}
    return answers, memory


def summarise(answers: Sequence[Answer], memory: dict[int, dict[str, dict[str, int]]]) -> dict:
    table: dict[str, dict[str, dict]] = {}
    present = {a.policy for a in answers}
    for policy in [p for p in ("xl3m", "truncate", "reject") if p in present]:
        table[policy] = {}
        for length in sorted({a.length for a in answers}):
            rows = [a for a in answers if a.policy == policy and a.length == length]
            before = [a for a in rows if a.is_before_last_window]
            ok = [a for a in rows if not a.error]
            table[policy][str(length)] = {
                "accuracy": sum(a.is_right for a in rows) / len(rows),
                "accuracy_needle_before_last_window": (
                    sum(a.is_right for a in before) / len(before) if before else None
                ),
                "mean_ttft_s": sum(a.ttft_s for a in ok) / len(ok) if ok else None,
                "mean_scoring_s": sum(a.scoring_s for a in ok) / len(ok) if ok else None,
                "mean_scoring_tokens": sum(a.num_scoring_tokens for a in ok) / len(ok) if ok else None,
                "mean_segments": sum(a.num_segments for a in ok) / len(ok) if ok else None,
                "scoring_share_of_prefill": _share(ok),
                "mean_wall_s": sum(a.wall_s for a in ok) / len(ok) if ok else None,
                "errors": len(rows) - len(ok),
                "answers": [asdict(a) for a in rows],
            }
    return {"scenario": "passkey", "policies": table, "memory_kb_after_length": memory}


def _share(rows: Sequence[Answer]) -> float | None:
    total = sum(a.scoring_compute_s + a.prefill_compute_s for a in rows)
    return sum(a.scoring_compute_s for a in rows) / total if total else None


def write(folder: Path, results: dict) -> None:
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# passkey (window {results.get('context_window')} tokens, emulated time)",
        "",
        "| policy | length | accuracy | acc. (needle before last window) | mean TTFT s | scoring s | "
        "scoring tokens | segments | scoring share of prefill |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for policy, rows in results["policies"].items():
        for length, r in rows.items():
            before = r["accuracy_needle_before_last_window"]
            lines.append(
                f"| {policy} | {int(length):,} | {r['accuracy']:.0%} | "
                f"{'-' if before is None else f'{before:.0%}'} | {_f(r['mean_ttft_s'])} | "
                f"{_f(r['mean_scoring_s'])} | {_f(r['mean_scoring_tokens'], 0)} | "
                f"{_f(r['mean_segments'], 0)} | "
                f"{_f(r['scoring_share_of_prefill'], 3)} |"
            )
    lines += ["", "Peak resident memory (VmHWM, MiB) after each length:", ""]
    memory = results["memory_kb_after_length"]
    names = sorted({n for per in memory.values() for n in per})
    lines.append("| length | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for length, per in memory.items():
        cells = [_f(per.get(n, {}).get("VmHWM", 0) / 1024, 0) for n in names]
        lines.append(f"| {int(length):,} | " + " | ".join(cells) + " |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
