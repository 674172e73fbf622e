"""A prompt the router reads window by window: in memory (a unary Generate) or spooled to a temporary
file (a chunked upload), so a prompt of millions of tokens never sits in the router's memory whole.

Uploads arrive in order but XL3M's question is the prompt's tail, known only at the end: the chunks
go to disk as they arrive (4 bytes a token) and are read back one segment at a time.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from supernode.core import tokens
from supernode.runtime.config import Settings
from supernode.runtime.errors import invalid
from supernode.v1 import router_pb2

_WIDTH = 4  # bytes per spooled token (uint32)


class PromptSource(Protocol):
    @property
    def num_tokens(self) -> int: ...

    def read(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of the prompt."""
        ...

    def close(self) -> None: ...


class ListSource:
    def __init__(self, prompt: Sequence[int]) -> None:
        self._prompt = prompt

    @property
    def num_tokens(self) -> int:
        return len(self._prompt)

    def read(self, start: int, end: int) -> list[int]:
        return list(self._prompt[start:end])

    def close(self) -> None:
        pass


class SpoolSource:
    """Tokens appended to an unlinked temporary file; memory held: one chunk at a time."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._file = tempfile.TemporaryFile(prefix="supernode-prompt-")
        self._num = 0

    @property
    def num_tokens(self) -> int:
        return self._num

    def append(self, chunk: Sequence[int]) -> None:
        if self._num + len(chunk) > self.max_tokens:
            raise invalid("prompt", f"the upload exceeds {self.max_tokens} tokens (xl3m.max_prompt_tokens)")
        self._file.seek(0, os.SEEK_END)
        array("I", chunk).tofile(self._file)
        self._num += len(chunk)

    def read(self, start: int, end: int) -> list[int]:
        start, end = max(0, start), min(end, self._num)
        if end <= start:
            return []
        self._file.seek(start * _WIDTH)
        out = array("I")
        out.frombytes(self._file.read((end - start) * _WIDTH))
        return out.tolist()

    def close(self) -> None:
        self._file.close()


async def receive(
    chunks: AsyncIterator[router_pb2.UploadChunk],
    settings: Settings,
    encode: Callable[[str], Sequence[int]] = tokens.encode,
) -> tuple[router_pb2.GenerateRequest, SpoolSource]:
    """The header and the spooled prompt of a GenerateUpload call, text chunks tokenized by `encode`
    (the router's tokenizer); bad input raises INVALID_ARGUMENT naming the field and the rule."""
    cfg = settings.xl3m
    first = await anext(chunks, None)
    if first is None or first.WhichOneof("part") != "header":
        raise invalid("header", "the first message of an upload must be the header")
    header = first.header
    if header.prompt or header.token_ids:
        raise invalid("header", "carries no prompt: send the prompt in the chunks that follow")
    spool = SpoolSource(cfg.max_prompt_tokens)
    kind = ""
    try:
        async for msg in chunks:
            if msg.WhichOneof("part") != "prompt":
                raise invalid("header", "only the first message of an upload may be the header")
            part = msg.prompt
            if part.text and part.token_ids:
                raise invalid("prompt", "a chunk holds text or token_ids, not both")
            this = "text" if part.text else "token_ids"
            if kind and this != kind:
                raise invalid("prompt", "an upload sends text chunks or token_ids chunks, not both")
            kind = this
            ids = encode(part.text) if part.text else part.token_ids
            if len(ids) > cfg.max_upload_chunk_tokens:
                raise invalid("prompt", f"a chunk holds more than {cfg.max_upload_chunk_tokens} tokens")
            if ids and max(ids) >= tokens.VOCAB_SIZE:
                raise invalid(
                    "token_ids", f"token {max(ids)} is outside the vocabulary [0, {tokens.VOCAB_SIZE})"
                )
            spool.append(ids)
        if spool.num_tokens == 0:
            raise invalid("prompt", "must not be empty")
    except BaseException:
        spool.close()
        raise
    return header, spool
