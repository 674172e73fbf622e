from __future__ import annotations

import json
from pathlib import Path

import pytest

from supernode.loadgen.scenarios import SAMPLE_TRACE
from supernode.loadgen.trace import MOONCAKE_BLOCK_TOKENS, TraceRecord, parse_trace, trace_requests
from supernode.loadgen.trace_gen import generate_sample

B = MOONCAKE_BLOCK_TOKENS


def test_sample_trace_ships_and_matches_its_generator() -> None:
    lines = Path(SAMPLE_TRACE).read_text().splitlines()
    assert 100 <= len(lines) <= 300
    assert [json.loads(line) for line in lines] == generate_sample()
    records = parse_trace(lines)
    assert records[0].timestamp_ms == 0 and all(r.input_length <= len(r.hash_ids) * B for r in records)
    shared = sum(1 for r in records if r.hash_ids and r.hash_ids[0] < 192)
    assert shared > len(records) // 2  # the sample is meant to exercise prefix caching


def test_equal_hash_ids_give_equal_token_blocks() -> None:
    records = [
        TraceRecord(0, 2 * B + 10, 5, (1, 2, 3)),
        TraceRecord(1500, 2 * B, 7, (1, 2)),
        TraceRecord(3000, B, 7, (9,)),
        TraceRecord(4000, 3 * B, 7, (1,)),  # longer than its blocks: padded with fresh tokens
    ]
    a, b, c, d = trace_requests(records, seed=5, speedup=2.0)
    assert a.token_ids[: 2 * B] == b.token_ids
    assert c.token_ids[:B] != a.token_ids[:B]
    assert d.token_ids[:B] == a.token_ids[:B] and len(d.token_ids) == 3 * B
    assert [len(s.token_ids) for s in (a, b, c)] == [2 * B + 10, 2 * B, B]
    assert [s.arrival_s for s in (a, b, c, d)] == [0.0, 0.75, 1.5, 2.0]
    assert (a.max_tokens, b.max_tokens) == (5, 7)
    assert trace_requests(records, seed=5)[0] == trace_requests(records, seed=5)[0]
    assert len(trace_requests(records, seed=5, max_requests=2)) == 2


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('{"timestamp": 1, "output_length": 3}', "line 2: missing field 'input_length'"),
        ('{"timestamp": 1, "input_length": "x", "output_length": 3}', "line 2: .*numbers"),
        ('{"timestamp": 1, "input_length": 0, "output_length": 3}', "line 2: lengths must be >= 1"),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_bad_trace_lines_are_named(line: str, match: str) -> None:
    good = '{"timestamp": 0, "input_length": 10, "output_length": 3, "hash_ids": [0]}'
    with pytest.raises(ValueError, match=match):
        parse_trace([good, line])


def test_blank_lines_skipped() -> None:
    assert len(parse_trace(["", '{"timestamp": 0, "input_length": 1, "output_length": 1}', "  "])) == 1
