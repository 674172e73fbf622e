"""Deterministic synthetic token ids and their text. Pure.

Ids 257..129279 are ordinary DeepSeek-R1 tokens (0..255 are bytes). Every sequence is a function of a seed
tuple, so equal seeds give equal tokens: that is how workloads build prompts that really share prefixes.
For the HTTP target each id maps to one pronounceable word, so shared token prefixes stay shared text.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

FIRST_ORDINARY_TOKEN = 257
VOCAB_SIZE = 129280
BLOCK_TOKENS = 512  # tokens generated per seeded block; long sequences are chains of blocks

# Seed-tuple tags: keep the streams of different workload parts independent.
TAG_FRESH = 1
TAG_SYSTEM = 2
TAG_ASSISTANT = 3
TAG_HASH_BLOCK = 4
TAG_PAD = 5

_SYLLABLES = (
    "ka ri to mu se na lo vi de pa su mo ne ti ra ko bu le fa gi ho ju ke ma no pe qu sa ta ve wo zi "
    "an el in or un ba ce di fo gu hi ja ku li me ni po ro si tu va we xo yu za bo ca du fe go"
).split()


def random_tokens(seed: Sequence[int], num_tokens: int) -> list[int]:
    """`num_tokens` ordinary token ids drawn from a generator seeded by `seed` (non-negative ints)."""
    if num_tokens <= 0:
        return []
    rng = np.random.default_rng(list(seed))
    ids: list[int] = rng.integers(FIRST_ORDINARY_TOKEN, VOCAB_SIZE, size=num_tokens).tolist()
    return ids


def chained_tokens(seed: Sequence[int], num_tokens: int) -> list[int]:
    """A long sequence built from seeded blocks, so every prefix is the same whatever `num_tokens` is."""
    out: list[int] = []
    block = 0
    while len(out) < num_tokens:
        out.extend(random_tokens([*seed, block], min(BLOCK_TOKENS, num_tokens - len(out))))
        block += 1
    return out


@cache
def _vocabulary() -> tuple[str, ...]:
    n = len(_SYLLABLES)
    return tuple(
        _SYLLABLES[i % n] + _SYLLABLES[(i // n) % n] + _SYLLABLES[(i // (n * n)) % n]
        for i in range(VOCAB_SIZE)
    )


def word(token_id: int) -> str:
    """The word standing for one token id."""
    return _vocabulary()[token_id % VOCAB_SIZE]


def detokenize(token_ids: Sequence[int]) -> str:
    """Space-separated words, one per token id (deterministic; shared id prefixes give shared text)."""
    vocab = _vocabulary()
    return " ".join(vocab[t % VOCAB_SIZE] for t in token_ids)
