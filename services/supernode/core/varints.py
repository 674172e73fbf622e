"""Token ids as protobuf packed varints (uint32), encoded and decoded by protobuf's C codec.

The bytes are exactly protobuf's (`Block.tokens` on the wire, the token section of a stored SNKV3
block): 7 bits a byte, least significant group first, the top bit set on every byte but a varint's
last. A byte loop in Python took ~25 us to encode a block of 128 ids and ~35 us to decode it; the C
codec (upb) takes ~6 and ~7. It runs over a one-field message declared here (`repeated uint32 ids = 1`,
packed), whose serialized form is a tag, a length and then exactly those varints, so this pure module
needs no generated stubs.

Input that protobuf reads differently from the byte loop goes through the byte loop (`encode_each`,
`decode_each`, the reference), so the bytes, the ids and the errors are the byte loop's in every case:
ids that are not ints in [0, 2**32) (protobuf refuses them; the loop names the first), a varint cut off
at the end, and any varint of 5 bytes or more (protobuf reads up to 10 and keeps the low 32 bits; the
loop refuses over 5 and reads a 5th byte whole). No id below 2**28 needs 5 bytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

MAX_VARINT_BYTES = 5  # a uint32
_FIELD_TAG = 0x0A  # field 1, length-delimited: a packed repeated field
# Continuation bytes map to 1, the rest to 0: four 1s in a row start a varint of 5 bytes or more.
_IS_CONTINUATION = bytes(int(b >= 0x80) for b in range(256))
_LONG_VARINT = b"\x01" * (MAX_VARINT_BYTES - 1)


def _ids_message() -> Any:
    """The message class of `message Ids { repeated uint32 ids = 1; }` (proto3, so packed)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="supernode/core/varints.proto", package="supernode.core.varints", syntax="proto3"
    )
    ids = proto.message_type.add(name="Ids")
    ids.field.add(
        name="ids", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()  # a pool of its own: no name in it can clash with others
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("supernode.core.varints.Ids"))


_Ids = _ids_message()


def encode(tokens: Sequence[int]) -> bytes:
    """Token ids (each 0 <= id < 2**32) as protobuf packed varints; ValueError names the first bad id."""
    if isinstance(tokens, array):  # protobuf takes a list of ints in about 2/3 of an array's time
        tokens = tokens.tolist()
    try:
        wire: bytes = _Ids(ids=tokens).SerializeToString()
    except (ValueError, TypeError, OverflowError):
        return encode_each(tokens)  # raises the reference's error for the first bad id
    return wire[_header_size(wire) :]


def decode(encoded: bytes | memoryview) -> list[int]:
    """The token ids of protobuf packed varints; ValueError when they do not parse (a varint over 5
    bytes, or one cut off at the end)."""
    body = bytes(encoded)
    if not body or body[-1] >= 0x80 or _LONG_VARINT in body.translate(_IS_CONTINUATION):
        return decode_each(body)  # empty, or the reference's error (or its reading of 5-byte varints)
    try:
        ids: list[int] = list(_Ids.FromString(_length_prefix(len(body)) + body).ids)
    except message.DecodeError:  # not expected once the checks above pass; the reference decides
        return decode_each(body)
    return ids


def _header_size(wire: bytes) -> int:
    """Bytes before the ids in a serialized `Ids`: the tag and the length varint (none when empty)."""
    if not wire:
        return 0
    at = 1
    while wire[at] >= 0x80:
        at += 1
    return at + 1


def _length_prefix(size: int) -> bytes:
    """The tag and length that make `size` bytes of varints a serialized `Ids`."""
    head = bytearray([_FIELD_TAG])
    while size > 0x7F:
        head.append((size & 0x7F) | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head)


def encode_each(tokens: Sequence[int]) -> bytes:
    """`encode`, one id and one byte at a time (the reference; and the path for odd input)."""
    out = bytearray()
    for token in tokens:
        if not 0 <= token < 1 << 32:
            raise ValueError(f"token id {token} is not a uint32")
        while token > 0x7F:
            out.append((token & 0x7F) | 0x80)
            token >>= 7
        out.append(token)
    return bytes(out)


def decode_each(encoded: bytes | memoryview) -> list[int]:
    """`decode`, one byte at a time (the reference; and the path that raises its errors)."""
    tokens: list[int] = []
    value = shift = 0
    for byte in bytes(encoded):
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 28:
                raise ValueError("token varint longer than a uint32")
            continue
        tokens.append(value)
        value = shift = 0
    if shift:
        raise ValueError("truncated token varint")
    return tokens
