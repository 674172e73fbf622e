"""The passkey-retrieval workload: a haystack of filler, a passkey sentence at a depth, the question.

The classic long-context test (Mohtashami & Jaggi's landmark-attention passkey task; the XL3M paper
reports needle-in-a-haystack results): the filler repeats "The grass is green. ..." sentences, a
sentence "The pass key is NNNNN. Remember it. NNNNN is the pass key." sits at `depth` (0 = start,
1 = just before the question), and the prompt ends with "What is the pass key? The pass key is". An
answer is right when the continuation contains the passkey. The byte-level tokenizer makes one
character one token, so lengths are in tokens and characters alike.

Prompts are produced as chunks of text, so a 20M-token haystack never exists whole in the client.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "What is the pass key? The pass key is"
LENGTHS = (8 * 1024, 32 * 1024, 128 * 1024, 512 * 1024, 1024 * 1024)
HUGE_LENGTHS = (4 * 1024 * 1024, 20 * 1024 * 1024)  # behind --huge: the paper's 20M claim
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
CHUNK_CHARS = 256 * 1024


def needle(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key. "


@dataclass(frozen=True, slots=True)
class PasskeyCase:
    length: int  # prompt tokens in all (haystack + needle + question)
    depth: float  # where the needle starts, as a fraction of the haystack
    key: str  # five digits

    @property
    def num_filler(self) -> int:
        return max(0, self.length - len(needle(self.key)) - len(QUESTION))

    @property
    def needle_at(self) -> int:
        """Token offset of the needle in the prompt (filler is cut at whole characters)."""
        return int(self.num_filler * self.depth)

    def chunks(self, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
        """The prompt, in order, in pieces of at most `chunk_chars` characters."""
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


def cases(lengths: tuple[int, ...], depths: tuple[float, ...], seed: int) -> list[PasskeyCase]:
    """One case per (length, depth), each with its own passkey drawn from `seed`."""
    rng = random.Random(seed)
    out = []
    for length in lengths:
        for depth in depths:
            if not 0.0 <= depth <= 1.0:
                raise ValueError(f"depth {depth} is not in [0, 1]")
            out.append(PasskeyCase(length, depth, f"{rng.randrange(10_000, 100_000)}"))
    return out
