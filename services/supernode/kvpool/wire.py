"""`GetResponse` written straight to protobuf wire bytes, payloads copied once.

Building a `GetResponse` message copies each payload into the message and again when it is
serialized; with payloads of megabytes those copies (into fresh memory, page faults included) cost
more than Redis and gRPC together. Here each block's small fields (key, tokens, nominal bytes) are
serialized by protobuf itself, its payload is appended as field 3 by hand, and the whole reply is
joined once, straight from the values Redis returned. The bytes are a valid `GetResponse` (protobuf
accepts fields in any order and concatenated fields as one message); a test parses them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import grpc

from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc

Handler: TypeAlias = grpc.RpcMethodHandler
_BLOCKS_TAG = b"\x0a"  # GetResponse.blocks: field 1, length-delimited
_PAYLOAD_TAG = b"\x1a"  # Block.payload: field 3, length-delimited


def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class GetReplyWriter:
    """Collects the blocks of one Get reply in order, then `finish()` joins them into wire bytes."""

    def __init__(self) -> None:
        self._parts: list[bytes | memoryview] = []
        self._missing: list[str] = []

    def add(self, key: str, tokens: Sequence[int], nominal_bytes: int, payload: memoryview | None) -> None:
        """One found block; `payload` None sends none (the reader asked for tokens only)."""
        head = kvpool_pb2.Block(key=key, tokens=tokens, nominal_bytes=nominal_bytes).SerializeToString()
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
    """`add_KvPoolServicer_to_server`, with Get's serializer taking the writer's bytes as they are
    (every other method, including any the proto gains, is registered as generated)."""
    capture = _Capture()
    kvpool_pb2_grpc.add_KvPoolServicer_to_server(servicer, capture)
    handlers = dict(capture.handlers)
    handlers["Get"] = grpc.unary_unary_rpc_method_handler(
        servicer.Get, request_deserializer=kvpool_pb2.GetRequest.FromString, response_serializer=serialize_get
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
