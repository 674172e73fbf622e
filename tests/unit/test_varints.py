"""The token-id varint codec and block keys against the byte-at-a-time code they replaced.

The SNKV3 bytes stored in Redis, the ids read back, the errors and the block keys (compared across
runs) are pinned to the previous implementations: the codec's byte loop (kept in `varints` as the
reference, itself pinned to known bytes) and the previous block-key chain, copied below.
"""

from __future__ import annotations

import hashlib
import random
import struct
from array import array
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pytest

from supernode.core import blocks, varints

EDGES = [0, 1, 127, 128, 255, 256, 2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**31, 2**32 - 1]


# The byte-at-a-time codec the C codec replaced is kept in the module as the reference (and the path
# for odd input); it is pinned to protobuf's bytes and errors below, and the fast path to it.
old_encode = varints.encode_each
old_decode = varints.decode_each


def test_the_reference_codec_is_protobufs_packed_varints():
    ids = [0, 1, 127, 128, 300, 2**32 - 1]
    wire = bytes.fromhex("00017f8001ac02ffffffff0f")
    assert old_encode(ids) == wire and old_decode(wire) == ids
    with pytest.raises(ValueError, match="token id -1 is not a uint32"):
        old_encode([1, -1])
    with pytest.raises(ValueError, match="truncated token varint"):
        old_decode(b"\x01\x80")
    with pytest.raises(ValueError, match="longer than a uint32"):
        old_decode(b"\xff\xff\xff\xff\xff\x01")


def old_block_keys(token_ids: Sequence[int], block_tokens: int) -> list[str]:
    keys: list[str] = []
    previous = b""
    for start in range(0, len(token_ids), block_tokens):
        chunk = token_ids[start : start + block_tokens]
        h = hashlib.blake2b(previous, digest_size=16)
        h.update(struct.pack(f"<{len(chunk)}I", *chunk))
        previous = h.digest()
        keys.append(previous.hex())
    return keys


def outcome(fn: Callable[[Any], Any], arg: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(arg)
    except Exception as err:  # the type and message are what is compared
        return type(err).__name__, str(err)


def random_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.choice([*EDGES, rng.randrange(2**32), rng.randrange(129_280)]) for _ in range(n)]


def test_encode_and_decode_match_the_byte_loop_on_random_ids() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        ids = random_ids(rng, rng.randrange(0, 300))
        wire = old_encode(ids)
        assert varints.encode(ids) == wire
        assert varints.encode(array("I", ids)) == wire
        assert varints.encode(cast(Sequence[int], np.asarray(ids, dtype=np.uint32))) == wire
        assert varints.decode(wire) == ids
        assert varints.decode(memoryview(b"xx" + wire)[2:]) == ids
    assert varints.encode(EDGES) == old_encode(EDGES) and varints.decode(old_encode(EDGES)) == EDGES


@pytest.mark.parametrize(
    "ids", [[-1], [2**32], [5, 2**40], [2**70], [1.5], [1.0], [3, None], ["7"], [np.uint64(2**32)]]
)
def test_bad_ids_raise_what_the_byte_loop_raised(ids: list[Any]) -> None:
    expected = outcome(old_encode, ids)
    assert expected[0] != "ok"
    assert outcome(varints.encode, ids) == expected


def test_ids_the_byte_loop_accepted_encode_the_same() -> None:
    for ids in ([True, 3], [np.int64(5), 300], [np.uint32(2**32 - 1)], []):
        assert outcome(varints.encode, ids) == outcome(old_encode, ids)


@pytest.mark.parametrize(
    "wire",
    [
        b"\x80",  # truncated
        b"\x01\xff\xff",  # truncated after a good id
        b"\x80\x80\x80\x80\x80\x00",  # 6 bytes: longer than a uint32
        b"\x01\xff\xff\xff\xff\xff\x01",
        b"\x80\x80\x80\x80\x00",  # 5 bytes, padded: the loop reads 0
        b"\x80\x80\x80\x80\x7f",  # 5 bytes whose last is read whole (above 2**32)
        b"\xff\xff\xff\xff\x0f",  # 2**32 - 1
        b"\x80\x00\x81\x80\x00",  # padded short varints
        b"",
    ],
)
def test_decode_matches_the_byte_loop_on_odd_bytes(wire: bytes) -> None:
    assert outcome(varints.decode, wire) == outcome(old_decode, wire)


def test_decode_matches_the_byte_loop_on_random_bytes() -> None:
    rng = random.Random(5)
    choices = [0x00, 0x01, 0x0F, 0x10, 0x7F, 0x80, 0x81, 0xFF]
    num_errors = 0
    for _ in range(20_000):
        wire = bytes(rng.choice([*choices, rng.randrange(256)]) for _ in range(rng.randrange(1, 16)))
        expected = outcome(old_decode, wire)
        num_errors += expected[0] != "ok"
        assert outcome(varints.decode, wire) == expected, wire
    assert 1000 < num_errors < 19_000, "both outcomes are exercised"


def test_block_keys_are_unchanged() -> None:
    # Computed with the previous code: keys are stored in Redis and compared across runs.
    assert blocks.block_keys(list(range(300)), 128) == [
        "ae60e591e6dd21c3cb937e62770392c9",
        "5f20e52d6d77977ecd358cac0ba39d79",
        "dc625ca2134e1e6415ffa759f3074414",
    ]
    rng = random.Random(3)
    for _ in range(300):
        prompt = random_ids(rng, rng.randrange(0, 1200))
        block_tokens = rng.choice([16, 100, 128, 512])
        keys = old_block_keys(prompt, block_tokens)
        assert blocks.block_keys(prompt, block_tokens) == keys
        assert blocks.block_keys(array("I", prompt), block_tokens) == keys
        split = blocks.split_blocks(prompt, rng.choice([7, 128, 512]))
        assert blocks.verify_chain(keys, split, block_tokens)
        if split:
            split[rng.randrange(len(split))][0] ^= 1
            assert not blocks.verify_chain(keys, split, block_tokens)


def test_block_keys_refuse_ids_that_are_not_uint32() -> None:
    for bad in ([1, -1], [2**32]):
        with pytest.raises(struct.error):
            old_block_keys(bad, 16)
        with pytest.raises(struct.error):
            blocks.block_keys(bad, 16)
