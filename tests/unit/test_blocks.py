from __future__ import annotations

import pytest

from supernode.core import blocks


def test_keys_chain_over_the_prefix():
    a = blocks.block_keys(list(range(300)), 128)
    b = blocks.block_keys(list(range(256)) + [7] * 44, 128)
    c = blocks.block_keys([1] + list(range(1, 300)), 128)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    assert c[0] != a[0] and c[1] != a[1], "a change early in the prompt changes every later key"


def test_payload_roundtrip_and_digest():
    key = blocks.block_keys([5, 6, 7], 128)[0]
    size = blocks.payload_size(3, 70_272, 1 / 1024)
    payload = blocks.make_payload(key, [5, 6, 7], size)
    assert len(payload) == size
    assert payload == blocks.make_payload(key, [5, 6, 7], size), "deterministic"
    opened = blocks.open_sealed(blocks.seal(payload))
    assert opened.tokens == [5, 6, 7]
    tampered = bytearray(blocks.seal(payload))
    tampered[-1] ^= 1
    with pytest.raises(blocks.CorruptBlockError):
        blocks.open_sealed(bytes(tampered))


@pytest.mark.parametrize("size", [524, 4096, 4097, 128 * 70_272])
def test_seal_block_is_seal_of_the_payload_built_once(size: int):
    tokens = list(range(900, 1028))
    key = blocks.block_keys(tokens, 128)[0]
    payload = blocks.make_payload(key, tokens, size)
    assert len(payload) == size
    sealed = blocks.seal_block(key, tokens, size)
    assert sealed == blocks.seal(payload)
    opened = blocks.open_sealed(sealed)
    assert opened.tokens == tokens and opened.payload == payload
    other = blocks.make_payload(blocks.block_keys([1, *tokens[1:]], 128)[0], tokens, size)
    assert other[:-64] != payload[:-64] or size < 600, "the filler depends on the key"
    for where in (0, blocks.DIGEST_BYTES + 3, len(sealed) // 2, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[where] ^= 0x40
        with pytest.raises(blocks.CorruptBlockError):
            blocks.open_sealed(bytes(tampered))


def test_block_key_shape():
    assert blocks.is_block_key("0123456789abcdef" * 2)
    for bad in ("0123456789ABCDEF" * 2, "0123456789abcdef" * 2 + "0", "0123456789abcde", "g" * 32, ""):
        assert not blocks.is_block_key(bad), bad
    assert not blocks.is_block_key("0123456789abcdef" * 2 + "\n")


def test_first_bad_block_key_names_the_first_key_that_is_not_one():
    good = [f"{i:032x}" for i in range(5)]
    assert blocks.first_bad_block_key(good) is None
    assert blocks.first_bad_block_key([]) is None
    # lengths that add up (31 + 33) and a newline inside the joined string are still caught
    for bad in ("0123456789ABCDEF" * 2, "0" * 31, "0" * 33, "g" * 32, "", "0" * 31 + "\n", b"0" * 32, None):
        keys = [*good[:3], bad, *good[3:]]
        assert blocks.first_bad_block_key(keys) == 3, bad
    assert blocks.first_bad_block_key(["0" * 31, "0" * 33]) == 0
    assert blocks.first_bad_block_key([good[0], "0" * 33, "0" * 31]) == 1


def test_payload_scales_with_ratio_but_always_carries_tokens():
    assert blocks.payload_size(128, 70_272, 1.0) == 128 * 70_272
    assert blocks.payload_size(128, 70_272, 1e-9) >= 4 * 128


def test_verify_chain():
    prompt = list(range(1000, 1300))
    keys = blocks.block_keys(prompt, 128)
    split = blocks.split_blocks(prompt, 128)
    assert blocks.verify_chain(keys, split, 128)
    split[1][0] += 1
    assert not blocks.verify_chain(keys, split, 128)
    # The check is on the tokens, however the reader's blocks split them.
    assert blocks.verify_chain(keys, blocks.split_blocks(prompt, 100), 128)
    assert not blocks.verify_chain([*keys, keys[0]], blocks.split_blocks(prompt, 128), 128)
    assert not blocks.verify_chain(keys[:2], blocks.split_blocks(prompt, 128), 128)
    assert blocks.verify_chain([], [], 128)
