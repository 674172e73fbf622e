"""The SSE relay's writes: pieces already waiting go out as one write, with the same events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from supernode.frontend.choices import Piece, Usage
from supernode.frontend.encoders import DONE, Encoder, sse
from supernode.frontend.errors import error_body
from supernode.frontend.schemas import GenerateParams
from supernode.frontend.serving import _events
from supernode.runtime.errors import SupernodeError, UnavailableError


class ReadyChoice:
    """A choice whose pieces are all there at once (a relay that fell behind its router streams);
    `error` is raised after them."""

    def __init__(self, index: int, texts: list[str], error: SupernodeError | None = None) -> None:
        self.index = index
        self.texts = texts
        self.error = error
        self.failed: str | None = None

    async def pieces(self) -> AsyncIterator[Piece]:
        for i, text in enumerate(self.texts):
            last = i == len(self.texts) - 1 and self.error is None
            yield Piece(text, 1, "length" if last else None)
        if self.error is not None:
            raise self.error

    def usage(self) -> Usage:
        return Usage(4, len(self.texts), 0)

    def fail(self, code: str) -> None:
        self.failed = code

    async def close(self) -> None:
        return None


def params() -> GenerateParams:
    return GenerateParams(None, (1, 2, 3, 4), 4, 8, 0, (), True)


async def relay(choice: ReadyChoice) -> list[bytes]:
    encoder = Encoder("deepseek-r1", chat=False)
    encoder.start("r1")
    return [chunk async for chunk in _events([choice], encoder, params(), "prompt")]  # type: ignore[list-item]


def one_by_one(texts: list[str]) -> bytes:
    encoder = Encoder("deepseek-r1", chat=False)
    encoder.start("r1")
    ends = [None] * (len(texts) - 1) + ["length"]
    return b"".join(encoder.delta(t, end) for t, end in zip(texts, ends, strict=True))


def test_waiting_pieces_go_out_in_one_write_with_the_same_events() -> None:
    texts = [chr(97 + i) for i in range(10)]
    chunks = asyncio.run(relay(ReadyChoice(0, texts)))
    assert chunks == [one_by_one(texts), DONE]


def test_pieces_before_an_error_are_written_before_the_error_event() -> None:
    err = UnavailableError("decode worker lost")
    choice = ReadyChoice(0, ["a", "b", "c"], err)
    chunks = asyncio.run(relay(choice))
    encoder = Encoder("deepseek-r1", chat=False)
    encoder.start("r1")
    pieces = b"".join(encoder.delta(t, None) for t in "abc")
    error = sse(error_body(err.message, err.openai_type, None, err.code.lower()))
    assert chunks == [pieces, error, DONE]
    assert choice.failed == err.code
