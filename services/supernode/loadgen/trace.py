"""Mooncake JSONL traces: parsing and replay as `RequestSpec`s. Pure.

Format, one JSON object per line: `timestamp` (ms since the trace start), `input_length` and
`output_length` (tokens), `hash_ids` (one id per 512-token block of the prompt; equal ids = equal blocks,
and ids chain, so a shared id prefix is a shared token prefix).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from supernode.loadgen.records import RequestSpec, compact
from supernode.loadgen.tokens import TAG_HASH_BLOCK, TAG_PAD, random_tokens
from supernode.loadgen.workloads import request_id

MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class TraceRecord:
    timestamp_ms: float  # since the trace start
    input_length: int  # prompt tokens
    output_length: int  # output tokens
    hash_ids: tuple[int, ...]  # one per 512-token prompt block


def _record(obj: object, line_no: int) -> TraceRecord:
    if not isinstance(obj, dict):
        raise ValueError(f"trace line {line_no}: expected a JSON object")
    try:
        record = TraceRecord(
            float(obj["timestamp"]),
            int(obj["input_length"]),
            int(obj["output_length"]),
            tuple(int(h) for h in obj.get("hash_ids", [])),
        )
    except KeyError as exc:
        raise ValueError(f"trace line {line_no}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"trace line {line_no}: timestamp, lengths and hash_ids must be numbers") from None
    if record.input_length < 1 or record.output_length < 1 or any(h < 0 for h in record.hash_ids):
        raise ValueError(f"trace line {line_no}: lengths must be >= 1 and hash_ids >= 0")
    return record


def parse_trace(lines: Iterable[str]) -> list[TraceRecord]:
    """Parse JSONL text lines (blank lines skipped); raises ValueError naming the line and field."""
    records: list[TraceRecord] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"trace line {line_no}: invalid JSON ({exc.msg})") from None
        records.append(_record(obj, line_no))
    return records


def trace_requests(
    records: Iterable[TraceRecord],
    seed: int,
    speedup: float = 1.0,
    max_requests: int | None = None,
    max_output_tokens: int | None = None,
    label: str = "trace",
) -> list[RequestSpec]:
    """Requests replaying `records`; arrivals are `timestamp / speedup` (emulated s, first at 0)."""
    if speedup <= 0:
        raise ValueError(f"trace speedup must be > 0, got {speedup}")
    blocks: dict[int, list[int]] = {}
    items = list(records)[:max_requests]
    start_ms = min((r.timestamp_ms for r in items), default=0.0)
    specs: list[RequestSpec] = []
    for i, rec in enumerate(items):
        prompt: list[int] = []
        for h in rec.hash_ids:
            if len(prompt) >= rec.input_length:
                break
            if h not in blocks:
                blocks[h] = random_tokens([seed, TAG_HASH_BLOCK, h], MOONCAKE_BLOCK_TOKENS)
            prompt.extend(blocks[h])
        prompt = prompt[: rec.input_length]
        prompt += random_tokens([seed, TAG_PAD, i], rec.input_length - len(prompt))
        out = rec.output_length if max_output_tokens is None else min(rec.output_length, max_output_tokens)
        arrival = (rec.timestamp_ms - start_ms) / 1000.0 / speedup
        specs.append(RequestSpec(request_id(label, i), compact(prompt), out, arrival, seed + i))
    return specs
