"""The passkey-retrieval workload: a haystack of filler, a passkey sentence at a depth, the question.

The classic long-context test (Mohtashami & Jaggi's landmark-attention passkey task; the XL3M paper
reports needle-in-a-haystack results): the filler repeats "The grass is green. ..." sentences, a
sentence "The pass key is NNNNN. Remember it. NNNNN is the pass key." sits at `depth` (0 = start,
1 = just before the question), and the prompt ends with "What is the pass key? The pass key is". An
answer is right when the continuation contains the passkey. The byte-level tokenizer makes one
character one token, so lengths are in tokens and characters alike.

Prompts are produced as chunks of text, so a 20M-token haystack never exists whole in the client.
`filler="varied"` replaces the repeated sentences with seeded random sentences over a small vocabulary
that includes "pass", "key", "the" and "is", a harder haystack: the question's words occur everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "What is the pass key? The pass key is"
LENGTHS = (8 * 1024, 32 * 1024, 128 * 1024, 512 * 1024, 1024 * 1024)
HUGE_LENGTHS = (4 * 1024 * 1024, 20 * 1024 * 1024)  # behind --huge: the paper's 20M claim
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
CHUNK_CHARS = 256 * 1024
FILLERS = ("repeat", "varied")
_WORDS = (
    "the a of and to in is was he she it they we you that this with for on as at by from key pass sky "
    "grass sun blue green yellow go back again there here what"
).split()


def needle(key: str) -> str:
    # A sentence of its own wherever the filler is cut: with a subword tokenizer, "wThe pass key" and
    # " The pass key" are different tokens, and the question's " The pass key is" must match.
    return f" The pass key is {key}. Remember it. {key} is the pass key. "


def chars_per_token(encode: Callable[[str], Sequence[int]]) -> float:
    """Characters of the filler per token under `encode` (the server's tokenizer): what turns a
    length in tokens into characters of haystack."""
    sample = FILLER * 64
    return len(sample) / max(1, len(encode(sample)))


@dataclass(frozen=True, slots=True)
class PasskeyCase:
    length: int  # prompt tokens in all (haystack + needle + question), as the server counts them
    depth: float  # where the needle starts, as a fraction of the haystack
    key: str  # five digits
    filler: str = "repeat"  # "repeat" (the classic sentences) or "varied" (seeded random sentences)
    chars_per_token: float = 1.0  # the server tokenizer's characters per token (1.0: byte tokens)

    @property
    def num_chars(self) -> int:
        return round(self.length * self.chars_per_token)

    @property
    def num_filler(self) -> int:
        """Characters of filler (haystack)."""
        return max(0, self.num_chars - len(needle(self.key)) - len(QUESTION))

    @property
    def needle_at(self) -> int:
        """Character offset of the needle in the prompt (filler is cut at whole characters)."""
        return int(self.num_filler * self.depth)

    def chunks(self, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
        """The prompt, in order, in pieces of at most `chunk_chars` characters."""
        if self.filler == "varied":
            hay = _varied(int(self.key), chunk_chars)
            yield from _take(hay, self.needle_at, chunk_chars)
            yield needle(self.key)
            yield from _take(hay, self.num_filler - self.needle_at, chunk_chars)
        else:
            yield from _filler(0, self.needle_at, chunk_chars)
            yield needle(self.key)
            yield from _filler(self.needle_at, self.num_filler, chunk_chars)
        yield QUESTION

    def text(self) -> str:
        return "".join(self.chunks())

    def is_right(self, continuation: str) -> bool:
        return self.key in continuation


def _filler(start: int, end: int, chunk_chars: int) -> Iterator[str]:
    """Characters [start, end) of the endless filler, in pieces (period-aligned, so the haystack
    reads the same whichever side of the needle a piece lies)."""
    period = len(FILLER)
    block = FILLER * (chunk_chars // period + 2)
    pos = start
    while pos < end:
        offset = pos % period
        take = min(end - pos, chunk_chars)
        yield block[offset : offset + take]
        pos += take


class _Stream:
    """An endless text stream read in pieces (keeps what a piece left over)."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self.pieces = pieces
        self.rest = ""

    def read(self, n: int) -> str:
        out, size = [self.rest], len(self.rest)
        while size < n:
            piece = next(self.pieces)
            out.append(piece)
            size += len(piece)
        text = "".join(out)
        self.rest = text[n:]
        return text[:n]


def _varied(seed: int, chunk_chars: int) -> _Stream:
    rng = random.Random(seed)

    def sentences() -> Iterator[str]:
        while True:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
            yield " ".join(words).capitalize() + ". "

    return _Stream(sentences())


def _take(stream: _Stream, n: int, chunk_chars: int) -> Iterator[str]:
    while n > 0:
        take = min(n, chunk_chars)
        yield stream.read(take)
        n -= take


def cases(
    lengths: tuple[int, ...], depths: tuple[float, ...], seed: int, filler: str = "repeat",
    chars_per_token: float = 1.0,
) -> list[PasskeyCase]:  # fmt: skip
    """One case per (length, depth), each with its own passkey drawn from `seed`."""
    if filler not in FILLERS:
        raise ValueError(f"filler {filler!r} is not one of {', '.join(FILLERS)}")
    rng = random.Random(seed)
    out = []
    for length in lengths:
        for depth in depths:
            if not 0.0 <= depth <= 1.0:
                raise ValueError(f"depth {depth} is not in [0, 1]")
            key = f"{rng.randrange(10_000, 100_000)}"
            out.append(PasskeyCase(length, depth, key, filler, chars_per_token))
    return out
