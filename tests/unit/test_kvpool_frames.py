"""A large block read into a frame becomes the bytes of the one-block reply message, and only then."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from supernode.core import blocks
from supernode.kvpool import frames
from supernode.kvpool.bulk import _DIRECT_BYTES, Buffers, _ReplyReader
from supernode.kvpool.wire import GetReplyWriter
from supernode.v1 import kvpool_pb2
from tests.unit.test_kvpool_bulk import feed, resp


@pytest.fixture(autouse=True)
def framing() -> Iterator[None]:
    was = frames.is_enabled()
    assert frames.enable(), "CPython: framing is available"
    yield
    frames.enable(was)


def sealed(num_tokens: int, size: int, first: int = 300) -> tuple[str, list[int], bytes]:
    tokens = [first + 7919 * i for i in range(num_tokens)]  # ids of 1 to 3 varint bytes
    key = blocks.block_keys(tokens, num_tokens)[0]
    return key, tokens, blocks.seal_block(key, tokens, size)


def open_any(value: object) -> blocks.OpenedBlock:
    """`open_sealed` of a view or buffer, as the service opens what the store returns."""
    return blocks.open_sealed(value)  # type: ignore[arg-type]


def framed(value: bytes) -> memoryview:
    room = frames.room_for(value[: frames.HEAD_BYTES], len(value))
    assert room is not None
    view, writable = frames.new_frame(len(value), room)
    writable[:] = value
    return view


@pytest.mark.parametrize("num_tokens", [1, 16, 128, 512])
@pytest.mark.parametrize("size", [_DIRECT_BYTES, 300_000, 9_000_000])
@pytest.mark.parametrize("nominal", [0, 127, 8_994_816, 2**35 - 1])
def test_the_framed_message_is_the_reply_the_writer_joins(num_tokens: int, size: int, nominal: int) -> None:
    key, tokens, value = sealed(num_tokens, size)
    view = framed(value)
    message = frames.message(view, key, open_any(view), nominal)
    assert type(message) is bytes and message is view.obj
    writer = GetReplyWriter()
    opened = blocks.open_sealed(value)
    writer.add(key, opened.encoded_tokens, nominal, opened.payload)
    got = kvpool_pb2.GetResponse.FromString(message)
    assert got == kvpool_pb2.GetResponse.FromString(writer.finish())
    assert list(got.blocks[0].tokens) == tokens and got.blocks[0].payload == value[blocks.DIGEST_BYTES :]


def test_only_a_frame_of_this_layout_is_written_in_place() -> None:
    key, _, value = sealed(128, 200_000)
    opened = blocks.open_sealed(value)
    assert frames.message(value, key, opened, 1) is None, "bytes: joined as before"
    assert frames.message(bytearray(value), key, open_any(bytearray(value)), 1) is None
    shifted = memoryview(b"\0" * 300 + value + b"\0")[300:-1]  # a view of bytes, not after a room
    assert frames.message(shifted, key, open_any(shifted), 1) is None
    view = framed(value)
    assert frames.message(view, key, open_any(view), 2**35) is None, "nominal too large"
    assert frames.message(view, key, open_any(view), 5) is not None


def test_no_room_for_what_is_not_a_sealed_block_or_when_off() -> None:
    _, _, value = sealed(16, 100_000)
    assert frames.room_for(b"x" * frames.HEAD_BYTES, 100_000) is None
    assert frames.room_for(value[:20], len(value)) is None, "too little of the value to tell"
    assert frames.room_for(value[: frames.HEAD_BYTES], 40) is None, "token ids past the end"
    frames.enable(False)
    assert frames.room_for(value[: frames.HEAD_BYTES], len(value)) is None


@pytest.mark.parametrize("seed", range(8))
def test_the_reader_frames_sealed_blocks_whatever_the_split(seed: int) -> None:
    # Larger than the reader's chunk (a value it holds whole is sliced out of it, as before).
    found = [sealed(128, size, 1000 + size)[2] for size in (300_000, 1_000_000, 2_000_000)]
    values: list[object] = [found[0], b"z" * 300_000, None, found[1], b"small", found[2]]

    async def main() -> Any:
        reader = _ReplyReader(Buffers(frames.room_for))
        data = resp(values)
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(data)), 60)) if seed else []
        waiter = reader.expect()
        feed(reader, data, cuts)
        return await waiter

    got = asyncio.run(main())
    assert [None if v is None else bytes(v) for v in got] == values
    assert [type(v).__name__ for v in got] == ["memoryview", "bytearray", "NoneType", "memoryview", "bytes",
                                               "memoryview"]  # fmt: skip
    assert all(type(v.obj) is bytes for v in got if isinstance(v, memoryview))


def test_a_corrupt_framed_block_fails_its_digest_as_before() -> None:
    _, _, value = sealed(128, 100_000)
    broken = value[:-1] + bytes([value[-1] ^ 1])
    with pytest.raises(blocks.CorruptBlockError):
        open_any(framed(broken))
