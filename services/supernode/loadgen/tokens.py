"""Deterministic synthetic token ids and their text.

Ids are DeepSeek BPE word tokens (`core.tokens.WORD_TOKENS`: a space and a lowercase word, each
encoding back to itself), valid under either server tokenizer. Every sequence is a function of a seed
tuple, so equal seeds give equal tokens: that is how workloads build prompts that really share
prefixes. For the HTTP target the ids are rendered with DeepSeek's tokenizer, and that text
tokenizes back to exactly the same ids, so a 512-token prompt is 512 tokens on the server too (and
shared token prefixes are shared text prefixes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supernode.core.tokenizer import deepseek
from supernode.core.tokens import WORD_TOKENS

FIRST_ORDINARY_TOKEN = 257
VOCAB_SIZE = 129280
_WORDS = np.asarray(WORD_TOKENS, dtype=np.int64)
BLOCK_TOKENS = 512  # tokens generated per seeded block; long sequences are chains of blocks

# Seed-tuple tags: keep the streams of different workload parts independent.
TAG_FRESH = 1
TAG_SYSTEM = 2
TAG_ASSISTANT = 3
TAG_HASH_BLOCK = 4
TAG_PAD = 5


def random_tokens(seed: Sequence[int], num_tokens: int) -> list[int]:
    """`num_tokens` word token ids drawn from a generator seeded by `seed` (non-negative ints)."""
    if num_tokens <= 0:
        return []
    rng = np.random.default_rng(list(seed))
    ids: list[int] = _WORDS[rng.integers(0, len(_WORDS), size=num_tokens)].tolist()
    return ids


def chained_tokens(seed: Sequence[int], num_tokens: int) -> list[int]:
    """A long sequence built from seeded blocks, so every prefix is the same whatever `num_tokens` is."""
    out: list[int] = []
    block = 0
    while len(out) < num_tokens:
        out.extend(random_tokens([*seed, block], min(BLOCK_TOKENS, num_tokens - len(out))))
        block += 1
    return out


def detokenize(token_ids: Sequence[int]) -> str:
    """The text of `token_ids` in DeepSeek's vocabulary (word tokens: it re-tokenizes to the same ids)."""
    return deepseek().decode(token_ids)
