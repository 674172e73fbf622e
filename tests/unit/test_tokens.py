from __future__ import annotations

import random
from array import array
from typing import Any

import pytest

from supernode.core import blocks, tokens, varints


def test_encode_decode_roundtrip():
    for text in ["hello", "", "ünïcødé ✓ 漢字", "a\nb\tc"]:
        assert tokens.decode(tokens.encode(text)) == text


def test_incremental_detokenizer_never_splits_characters():
    ids = tokens.encode("漢字 ok") + [300, 301] + tokens.encode("ü")
    detok = tokens.IncrementalDetokenizer()
    pieces = [detok.feed([t]) for t in ids] + [detok.flush()]
    assert "".join(pieces) == tokens.decode(ids)
    assert "\ufffd" not in "".join(pieces)


def test_model_copies_the_longest_earlier_match():
    prompt = tokens.encode("the quick brown fox jumps over the lazy dog. the quick brown")
    model = tokens.TokenModel(prompt, seed=1)
    assert tokens.decode(model.generate(20)) == " fox jumps over the l"[:20]


def test_model_is_deterministic_and_seeded():
    prompt = [500, 501, 502]
    a = tokens.TokenModel(prompt, seed=1).generate(30)
    b = tokens.TokenModel(prompt, seed=1).generate(30)
    c = tokens.TokenModel(prompt, seed=2).generate(30)
    assert a == b and a != c
    assert all(tokens.is_valid_token(t) for t in a)


def test_generated_tokens_do_not_depend_on_chunking():
    prompt = tokens.encode("abcabcabd")
    whole = tokens.TokenModel(prompt, 3).generate(12)
    model = tokens.TokenModel(prompt, 3)
    parts = model.generate(5) + model.generate(7)
    assert whole == parts


def test_next_token_matches_the_indexed_model():
    import random

    rng = random.Random(5)
    for trial in range(300):
        alphabet = rng.choice([3, 5, 50, 70_000])
        prompt = [
            rng.randrange(alphabet) + (257 if alphabet > 256 else 0) for _ in range(rng.randrange(1, 300))
        ]
        assert tokens.next_token(prompt, trial) == tokens.TokenModel(prompt, trial).next_token(), prompt
    assert tokens.next_token([], 1) == tokens.TokenModel([], 1).next_token()
    # A byte match straddling two tokens is not a token match.
    assert (
        tokens.next_token([1 << 24, 1, 7, 1, 1 << 24], 0)
        == tokens.TokenModel([1 << 24, 1, 7, 1, 1 << 24], 0).next_token()
    )


def test_first_invalid_token_is_the_same_for_lists_and_32_bit_arrays():
    top = tokens.VOCAB_SIZE
    cases: list[tuple[list[int], int | None]] = [
        ([], None),
        ([0, 5, top - 1], None),
        ([3, top, 7], top),
        ([3, -1, top + 5], -1),
        ([1, 2**31, 4], 2**31),  # past int32: the list path finds it
        ([1, 2**40], 2**40),
    ]
    for ids, bad in cases:
        assert tokens.first_invalid_token(ids) == bad
        if all(-(2**31) <= t < 2**31 for t in ids):
            assert tokens.first_invalid_token(array("i", ids)) == bad
        if all(0 <= t < 2**32 for t in ids):
            assert tokens.first_invalid_token(array("I", ids)) == bad
    int_like: list[Any] = [1.0, 2.0]
    assert tokens.first_invalid_token(int_like) is None  # judged by value, as before
    with pytest.raises(TypeError):
        tokens.first_invalid_token(list[Any](["a"]))


def test_a_32_bit_array_prompt_gives_what_its_list_gives():
    rng = random.Random(7)
    ids = [rng.randrange(tokens.VOCAB_SIZE) for _ in range(1000)] + [5, 6, 7, 8] * 5
    packed = tokens.packed_ids(array("i", ids))
    assert tokens.is_uint32_array(packed) and list(packed) == ids
    assert not tokens.is_uint32_array(array("i", ids)) and not tokens.is_uint32_array(ids)
    assert tokens.packed_ids(ids) == packed
    for n in (1, 17, len(ids)):
        assert tokens.next_token(packed[:n], 3) == tokens.next_token(ids[:n], 3)
    assert blocks.block_keys(packed, 128) == blocks.block_keys(ids, 128)
    assert varints.encode(packed[:128]) == varints.encode(ids[:128])
    with pytest.raises(OverflowError):
        tokens.packed_ids([1, -1])
