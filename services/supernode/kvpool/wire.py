"""`GetResponse` written straight to protobuf wire bytes, payloads copied once; `Block.tokens` as wire bytes.

Building a `GetResponse` message copies each payload into the message and again when it is
serialized; with payloads of megabytes those copies (into fresh memory, page faults included) cost
more than Redis and gRPC together. Here each block's small fields (key, tokens, nominal bytes) are
written by hand too (the token ids are stored as the packed varints `Block.tokens` is on the wire,
so they are copied, not converted), and the whole reply is joined once, straight from the values
Redis returned. The bytes are a valid `GetResponse` (protobuf accepts fields in any order and
concatenated fields as one message); a test parses them back.

`packed_tokens` goes the other way for `Put`: the varints of a request block's tokens, cut from the
block's serialized bytes (protobuf's C code writes them; reading 128 ids as Python ints took ~12 us).
"""

from __future__ import annotations

import functools
from typing import TypeAlias

import grpc

from supernode.core import blocks
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc

Handler: TypeAlias = grpc.RpcMethodHandler
_BLOCKS_TAG = b"\x0a"  # GetResponse.blocks: field 1, length-delimited
_KEY_TAG = b"\x0a\x20"  # Block.key: field 1, length-delimited, 32 bytes (a block key)
_TOKENS_TAG = b"\x12"  # Block.tokens: field 2, packed
_PAYLOAD_TAG = b"\x1a"  # Block.payload: field 3, length-delimited
_NOMINAL_TAG = b"\x20"  # Block.nominal_bytes: field 4, varint
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5
_CONTINUATION_BYTES = bytes(range(0x80, 0x100))


@functools.lru_cache(maxsize=4096)
def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]  # IndexError past the end: the caller's bytes are truncated
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def packed_tokens(block: kvpool_pb2.Block) -> bytes:
    """`block.tokens` as protobuf packed varints, cut from the block's serialized bytes."""
    data = block.SerializeToString()
    num_tokens = len(block.tokens)
    # protobuf writes fields in number order: a block key (field 1, 32 bytes), then the tokens.
    if data[34:35] == _TOKENS_TAG and data[:2] == _KEY_TAG and data[35] < 0x80:
        encoded = data[36 : 36 + data[35]]
    elif data[34:35] == _TOKENS_TAG and data[:2] == _KEY_TAG and data[36] < 0x80:
        encoded = data[37 : 37 + ((data[35] & 0x7F) | data[36] << 7)]
    else:
        encoded = _tokens_field(data)
    # Each varint ends in one byte below 0x80: the count must be the block's (else encode them here).
    if len(encoded.translate(None, _CONTINUATION_BYTES)) != num_tokens:
        return blocks.encode_tokens(list(block.tokens))
    return encoded


def _tokens_field(data: bytes) -> bytes:
    """Field 2's bytes in a serialized `Block`, wherever (and in however many pieces) they are;
    b"" when the bytes do not parse."""
    found: list[bytes] = []
    at = 0
    try:
        while at < len(data):
            tag, at = _read_varint(data, at)
            wire_type = tag & 7
            if wire_type == _LENGTH_DELIMITED:
                length, at = _read_varint(data, at)
                if tag >> 3 == 2:
                    found.append(data[at : at + length])
                at += length
            elif wire_type == _VARINT:
                _, at = _read_varint(data, at)
            elif wire_type in (_FIXED64, _FIXED32):
                at += 8 if wire_type == _FIXED64 else 4
            else:
                raise ValueError(f"wire type {wire_type}")
    except (IndexError, ValueError):
        return b""
    return b"".join(found) if at == len(data) else b""


def block_head(key: str, encoded_tokens: bytes | memoryview, nominal_bytes: int) -> bytes:
    """A `Block`'s key, tokens (packed varints as given) and nominal bytes as wire bytes; `key` is a
    validated block key (32 ASCII characters)."""
    parts: list[bytes | memoryview] = [_KEY_TAG, key.encode()]
    if len(encoded_tokens):
        parts += [_TOKENS_TAG, varint(len(encoded_tokens)), encoded_tokens]
    if nominal_bytes:
        parts += [_NOMINAL_TAG, varint(nominal_bytes)]
    return b"".join(parts)


class GetReplyWriter:
    """Collects the blocks of one Get reply in order, then `finish()` joins them into wire bytes."""

    def __init__(self) -> None:
        self._parts: list[bytes | memoryview] = []
        self._missing: list[str] = []

    def add(
        self, key: str, encoded_tokens: bytes | memoryview, nominal_bytes: int, payload: memoryview | None
    ) -> None:
        """One found block (`encoded_tokens`: its token ids as packed varints, `block_head`);
        `payload` None sends none (the reader asked for tokens only)."""
        head = block_head(key, encoded_tokens, nominal_bytes)
        if payload is None or not len(payload):
            self._parts += [_BLOCKS_TAG, varint(len(head)), head]
            return
        size = varint(len(payload))
        self._parts += [
            _BLOCKS_TAG, varint(len(head) + 1 + len(size) + len(payload)), head, _PAYLOAD_TAG, size, payload,
        ]  # fmt: skip

    def add_missing(self, key: str) -> None:
        self._missing.append(key)

    def finish(self) -> bytes:
        if self._missing:
            self._parts.append(kvpool_pb2.GetResponse(missing_keys=self._missing).SerializeToString())
        return b"".join(self._parts)


def serialize_get(reply: bytes | kvpool_pb2.GetResponse) -> bytes:
    """The Get handler's serializer: wire bytes pass through, a message (an error path) is serialized."""
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def add_kvpool_to_server(servicer: kvpool_pb2_grpc.KvPoolServicer, server: grpc.aio.Server) -> None:
    """`add_KvPoolServicer_to_server`, with Get's and GetStream's serializer taking the writer's bytes
    as they are (every other method, including any the proto gains, is registered as generated)."""
    capture = _Capture()
    kvpool_pb2_grpc.add_KvPoolServicer_to_server(servicer, capture)
    handlers = dict(capture.handlers)
    handlers["Get"] = grpc.unary_unary_rpc_method_handler(
        servicer.Get, request_deserializer=kvpool_pb2.GetRequest.FromString, response_serializer=serialize_get
    )
    handlers["GetStream"] = grpc.unary_stream_rpc_method_handler(
        servicer.GetStream,
        request_deserializer=kvpool_pb2.GetRequest.FromString,
        response_serializer=serialize_get,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.service, handlers),))
    server.add_registered_method_handlers(capture.service, handlers)


class _Capture:
    """Stands in for the server while the generated function registers its handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        return None

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, handlers
