"""A large block read from Redis straight into the bytes of the one-block reply message that serves it.

gRPC's Python layer sends only `bytes`, which it copies once more itself; a reply built from a
payload in its own buffer therefore copies every payload byte twice in the service (the reply's
join, then gRPC's copy). For a stream message of one block (`GetStream` sends a 9 MB block alone)
the join is avoidable: the direct reader (`bulk.py`) receives such a value into a fresh `bytes`
object with `room` bytes free in front of it, and once the block's digest is verified the message's
header (the `GetResponse.blocks` tag and length, the key, nominal bytes and token ids, the payload's
tag and length) is written into that room and over the digest, right before the payload
(`value[DIGEST_BYTES:]`, the same bytes as `Get`'s). The object is then the whole message.

Filling a `bytes` object is what C code does with `PyBytes_FromStringAndSize(NULL, n)`; here it is
done through `ctypes.pythonapi`, only on objects this module creates, before anyone else sees them.
The room is computed from the value's size and its first `HEAD_BYTES` (the block header says how many
bytes its token ids take); `message` recomputes the layout from the verified block and falls back
(returns None: the caller joins as before) on any mismatch. Framing is on once the service keeps
freed memory (`memory.keep_freed_memory`): frames are fresh allocations, which then reuse the heap
instead of faulting in new pages.
"""

from __future__ import annotations

import ctypes
import struct

from supernode.core import blocks
from supernode.kvpool.wire import varint

HEAD_BYTES = 64  # how much of a large value the reader holds before it chooses its buffer
_BLOCK_HEADER = struct.Struct("<5sHI")  # after a sealed block's digest: magic, tokens, token bytes
_NOMINAL_WIDTH = 5  # Block.nominal_bytes as a 5-byte varint (below 2**35), so the room needs no nominal
_PyBUF_WRITE = 0x200

_enabled = False
try:
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.argtypes, _new_bytes.restype = [ctypes.c_void_p, ctypes.c_ssize_t], ctypes.py_object
    _bytes_data = ctypes.pythonapi.PyBytes_AsString
    _bytes_data.argtypes, _bytes_data.restype = [ctypes.py_object], ctypes.c_void_p
    _memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
    _memory_view.argtypes, _memory_view.restype = (
        [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int],
        ctypes.py_object,
    )
    _AVAILABLE = True
except (AttributeError, OSError):  # not CPython
    _AVAILABLE = False


def enable(on: bool = True) -> bool:
    """Turns framing on (where the interpreter allows it); True if on."""
    global _enabled
    _enabled = on and _AVAILABLE
    return _enabled


def is_enabled() -> bool:
    return _enabled


def _layout(token_bytes: int, payload_bytes: int) -> tuple[int, int]:
    """(length of the Block message, bytes of the whole one-block message before the payload)."""
    tokens_field = 1 + len(varint(token_bytes)) + token_bytes if token_bytes else 0
    head = 2 + 32 + 1 + _NOMINAL_WIDTH + tokens_field + 1 + len(varint(payload_bytes))
    block_len = head + payload_bytes
    return block_len, 1 + len(varint(block_len)) + head


def room_for(head: bytes | memoryview, size: int) -> int | None:
    """Bytes to keep free before a `size`-byte value starting with `head`; None: not a sealed block
    (or framing is off), read it into a plain buffer."""
    if not _enabled or len(head) < blocks.DIGEST_BYTES + _BLOCK_HEADER.size:
        return None
    magic, _, token_bytes = _BLOCK_HEADER.unpack_from(head, blocks.DIGEST_BYTES)
    if magic != blocks.MAGIC or blocks.DIGEST_BYTES + _BLOCK_HEADER.size + token_bytes > size:
        return None
    return _layout(token_bytes, size - blocks.DIGEST_BYTES)[1] - blocks.DIGEST_BYTES


def new_frame(size: int, room: int) -> tuple[memoryview, memoryview]:
    """(the value as the store returns it: a read-only view of the frame past its room; a writable
    view of the same bytes, for the reader to receive into)."""
    frame: bytes = _new_bytes(None, room + size)  # uninitialized; the caller fills all of it
    writable = _memory_view(_bytes_data(frame) + room, size, _PyBUF_WRITE)
    return memoryview(frame)[room:], writable  # the first keeps the frame alive for the second


def message(value: object, key: str, opened: blocks.OpenedBlock, nominal_bytes: int) -> bytes | None:
    """The one-block `GetResponse` (with payload) for a verified `value` read into a frame, written in
    place; None when `value` is not a frame this layout fits (the caller builds the reply itself).
    The value's digest is overwritten: the caller must be done with it."""
    frame = value.obj if isinstance(value, memoryview) else None
    if type(value) is not memoryview or type(frame) is not bytes:
        return None
    if not 0 <= nominal_bytes < 2 ** (7 * _NOMINAL_WIDTH):
        return None
    room = len(frame) - value.nbytes
    tokens = opened.encoded_tokens
    payload_bytes = len(opened.payload)
    block_len, before_payload = _layout(len(tokens), payload_bytes)
    if (
        before_payload != room + blocks.DIGEST_BYTES
        or frame[room : room + blocks.DIGEST_BYTES] != opened.sealed[: blocks.DIGEST_BYTES]
    ):
        return None  # not this layout, or the view does not start after the room
    nominal = bytearray(varint(nominal_bytes).ljust(_NOMINAL_WIDTH, b"\x00"))
    nominal[:-1] = bytes(b | 0x80 for b in nominal[:-1])  # continuation bits: a padded varint
    parts: list[bytes | memoryview] = [
        b"\x0a",
        varint(block_len),
        b"\x0a\x20",
        key.encode(),
        b"\x20",
        bytes(nominal),
    ]
    if len(tokens):
        parts += [b"\x12", varint(len(tokens)), tokens]
    parts += [b"\x1a", varint(payload_bytes)]
    prefix = b"".join(parts)
    if len(prefix) != before_payload:
        return None
    _memory_view(_bytes_data(frame), before_payload, _PyBUF_WRITE)[:] = prefix
    return frame
