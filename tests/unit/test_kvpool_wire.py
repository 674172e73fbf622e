"""The Get reply written as wire bytes parses to the message protobuf itself would build."""

from __future__ import annotations

import pytest
from google.protobuf.internal.encoder import _VarintBytes

from supernode.core import blocks
from supernode.kvpool.wire import GetReplyWriter, packed_tokens, serialize_get, varint
from supernode.v1 import kvpool_pb2


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 9_000_000, 2**35 + 7])
def test_varint_matches_protobuf(n: int) -> None:
    assert varint(n) == _VarintBytes(n)


def sealed_block(first_token: int, num_tokens: int, size: int) -> tuple[str, blocks.OpenedBlock]:
    tokens = [first_token, *range(1, num_tokens)]
    key = blocks.block_keys(tokens, 128)[0]
    return key, blocks.open_sealed(blocks.seal_block(key, tokens, size))


@pytest.mark.parametrize("with_payload", [True, False])
@pytest.mark.parametrize("size", [600, 4096, 200_000])
def test_written_reply_equals_the_message(with_payload: bool, size: int) -> None:
    found = [sealed_block(70_000 + i, 128 - i, size) for i in range(3)]
    writer = GetReplyWriter()
    expected = kvpool_pb2.GetResponse()
    for i, (key, opened) in enumerate(found):
        writer.add(key, opened.encoded_tokens, 1000 * i, opened.payload if with_payload else None)
        payload = bytes(opened.payload) if with_payload else b""
        expected.blocks.add(key=key, tokens=opened.tokens, payload=payload, nominal_bytes=1000 * i)
        if i == 1:
            writer.add_missing("f" * 32)
    expected.missing_keys.append("f" * 32)
    got = kvpool_pb2.GetResponse.FromString(writer.finish())
    assert got == expected
    assert [b.payload[: len(blocks.MAGIC)] for b in got.blocks] == [blocks.MAGIC if with_payload else b""] * 3


def test_an_empty_reply_and_a_message_pass_through_the_serializer() -> None:
    assert GetReplyWriter().finish() == b""
    message = kvpool_pb2.GetResponse(missing_keys=["a" * 32])
    assert serialize_get(message) == message.SerializeToString()
    assert serialize_get(b"\x12\x01a") == b"\x12\x01a"


@pytest.mark.parametrize(
    "tokens", [[], [0], [1, 127, 128, 300, 16_384, 2**21, 2**28, 2**32 - 1], list(range(400, 528))]
)
def test_packed_tokens_are_the_varints_protobuf_writes(tokens: list[int]) -> None:
    block = kvpool_pb2.Block(key="a" * 32, tokens=tokens, payload=b"xyz", nominal_bytes=77)
    assert packed_tokens(block) == blocks.encode_tokens(tokens)
    assert blocks.decode_tokens(packed_tokens(block)) == tokens
    assert kvpool_pb2.Block(key="a" * 32, tokens=tokens).SerializeToString() == b"".join(
        [b"\x0a\x20", b"a" * 32, b"\x12" + varint(len(packed_tokens(block))) if tokens else b"",
         packed_tokens(block)]
    )  # fmt: skip


def test_packed_tokens_with_unknown_fields_and_unpacked_ids() -> None:
    tokens = [5, 300, 70_000]
    # An unknown varint field 9 and a fixed32 field 10 (a newer client's), then the ids unpacked
    # (tag 0x10 each: proto3 parsers must accept both encodings).
    wire = b"\x0a\x20" + b"b" * 32 + b"\x48\x07" + b"\x55abcd" + b"".join(b"\x10" + varint(t) for t in tokens)
    block = kvpool_pb2.Block.FromString(wire)
    assert list(block.tokens) == tokens
    assert packed_tokens(block) == blocks.encode_tokens(tokens)


def test_token_varints_reject_what_is_not_a_uint32() -> None:
    with pytest.raises(ValueError, match="uint32"):
        blocks.encode_tokens([2**32])
    with pytest.raises(ValueError, match="truncated"):
        blocks.decode_tokens(b"\x80")
    with pytest.raises(ValueError, match="longer"):
        blocks.decode_tokens(b"\xff\xff\xff\xff\xff\x01")


def test_packed_tokens_of_blocks_with_short_and_long_token_runs() -> None:
    # 1-byte and 2-byte length prefixes of the packed field, and the general parse (no key).
    for tokens in ([7], [2**31] * 25, list(range(1000, 1128)), [2**32 - 1] * 128):
        for key in ("c" * 32, ""):
            block = kvpool_pb2.Block(key=key, tokens=tokens)
            assert blocks.decode_tokens(packed_tokens(block)) == tokens
