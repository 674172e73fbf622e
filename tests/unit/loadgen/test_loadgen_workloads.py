from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np
import pytest

from supernode.core.tokenizer import deepseek
from supernode.core.tokens import WORD_TOKENS
from supernode.loadgen.lengths import parse_length
from supernode.loadgen.records import RequestSpec
from supernode.loadgen.tokens import (
    FIRST_ORDINARY_TOKEN,
    VOCAB_SIZE,
    chained_tokens,
    detokenize,
    random_tokens,
)
from supernode.loadgen.workloads import sessions, synthetic


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [("128", 128, 128), ("fixed:64", 64, 64), ("uniform:10:20", 10, 20), ("lognormal:100:0.5", 1, 10_000)],
)
def test_length_specs_sample_in_range(spec: str, low: int, high: int) -> None:
    dist = parse_length(spec)
    rng = random.Random(0)
    samples = [dist.sample(rng) for _ in range(2000)]
    assert low <= min(samples) and max(samples) <= high
    if dist.kind == "lognormal":
        assert sorted(samples)[1000] == pytest.approx(100, rel=0.1)  # median


@pytest.mark.parametrize("spec", ["", "gauss:1:2", "uniform:20:10", "lognormal:100", "fixed:x", "0"])
def test_bad_length_specs_raise(spec: str) -> None:
    with pytest.raises(ValueError, match="length"):
        parse_length(spec)


def test_synthetic_is_seeded_and_uses_ordinary_tokens() -> None:
    args = ([0.0, 0.5, 1.0], parse_length("uniform:5:50"), parse_length("8"))
    a, b = synthetic(*args, seed=3), synthetic(*args, seed=3)
    assert a == b and a != synthetic(*args, seed=4)
    assert [s.arrival_s for s in a] == [0.0, 0.5, 1.0]
    assert all(FIRST_ORDINARY_TOKEN <= t < VOCAB_SIZE for s in a for t in s.token_ids)
    assert {s.max_tokens for s in a} == {8} and len({s.request_id for s in a}) == 3


def test_chained_tokens_prefix_stable() -> None:
    assert chained_tokens([1, 2], 1500)[:700] == chained_tokens([1, 2], 700)


@pytest.mark.parametrize("reuse", [0.5, 0.9])
def test_sessions_really_share_the_reuse_ratio(reuse: float) -> None:
    specs = sessions(
        [0.0] * 40, parse_length("1000"), parse_length("50"), reuse, seed=1, sessions_in_flight=4
    )
    by_id = {s.request_id: s for s in specs}
    for i, spec in enumerate(specs):
        assert spec.num_shared_tokens == round(reuse * 1000)
        earlier = [by_id[spec.after]] if spec.after else specs[:i]
        if i == 0:
            continue  # the very first request has nobody to share with
        best = max(_common_prefix(spec.token_ids, e.token_ids) for e in earlier)
        assert best >= spec.num_shared_tokens
    assert specs[4].after == specs[0].request_id and specs[4].session_id == specs[0].session_id


def test_sessions_without_reuse_share_nothing() -> None:
    specs = sessions([0.0] * 12, parse_length("200"), parse_length("5"), 0.0, seed=1)
    prompts = [s.token_ids for s in specs]
    assert all(_common_prefix(a, b) < 3 for i, a in enumerate(prompts) for b in prompts[:i])
    with pytest.raises(ValueError, match="reuse ratio"):
        sessions([0.0], parse_length("10"), parse_length("5"), 1.0, seed=1)


def test_detokenize_keeps_shared_prefixes_as_text_and_server_token_counts() -> None:
    a, b = random_tokens([1], 600), random_tokens([1], 600)[:300] + random_tokens([2], 300)
    ta, tb = detokenize(a), detokenize(b)
    assert ta.split()[:300] == tb.split()[:300] and ta != tb and len(ta.split()) == 600
    assert deepseek().encode(ta) == a  # 600 requested tokens are 600 server tokens


def _workload_digest(specs: Sequence[RequestSpec]) -> str:
    h = hashlib.sha256()
    for s in specs:
        fields = (s.request_id, list(s.token_ids), s.max_tokens, s.arrival_s, s.seed, s.session_id, s.after)
        h.update(repr((*fields, s.num_shared_tokens)).encode())
    return h.hexdigest()


def test_prompts_built_as_arrays_are_the_list_built_ones() -> None:
    """Same seed, same prompts: the digests were taken from the list-building code these replaced."""
    for seed, n in [([1], 0), ([1], 1), ([2, 3], 600), ([9, 4, 7], 2000)]:
        drawn = np.random.default_rng(list(seed)).integers(0, len(WORD_TOKENS), size=max(n, 0))
        expected = np.asarray(WORD_TOKENS)[drawn].tolist() if n else []
        assert random_tokens(seed, n) == expected
        assert all(type(t) is int for t in random_tokens(seed, n))
    pieces = [random_tokens([5, 0], 512), random_tokens([5, 1], 512), random_tokens([5, 2], 76)]
    assert chained_tokens([5], 1100) == [t for piece in pieces for t in piece]
    arrivals = [0.5 * i for i in range(60)]
    talk = sessions(
        arrivals, parse_length("lognormal:900:0.8"), parse_length("uniform:1:300"), 0.5, 3,
        turns_per_session=3, sessions_in_flight=4,
    )  # fmt: skip
    assert _workload_digest(talk) == "55028cb96f3cc910e3c1eb591f1ad6b2f6f17e75c55c3570bf3d79d39e6a3399"
    fresh = synthetic(arrivals, parse_length("uniform:1:1500"), parse_length("fixed:8"), 4)
    assert _workload_digest(fresh) == "5d98d7b156b098ccf994b37f75b749a0247f87a52d4ddce1f3e858c81eddf926"
