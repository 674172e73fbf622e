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
import numpy.typing as npt

from supernode.core.tokenizer import deepseek
from supernode.core.tokens import WORD_TOKENS

FIRST_ORDINARY_TOKEN = 257
VOCAB_SIZE = 129280
_WORDS = np.asarray(WORD_TOKENS, dtype=np.int32)  # ids < VOCAB_SIZE < 2**31
BLOCK_TOKENS = 512  # tokens generated per seeded block; long sequences are chains of blocks

# Seed-tuple tags: keep the streams of different workload parts independent.
TAG_FRESH = 1
TAG_SYSTEM = 2
TAG_ASSISTANT = 3
TAG_HASH_BLOCK = 4
TAG_PAD = 5


def random_tokens(seed: Sequence[int], num_tokens: int) -> list[int]:
    """`num_tokens` word token ids drawn from a generator seeded by `seed` (non-negative ints)."""
    ids: list[int] = random_token_array(seed, num_tokens).tolist()
    return ids


def random_token_array(seed: Sequence[int], num_tokens: int) -> npt.NDArray[np.int32]:
    """`random_tokens` as a 32-bit array (the same ids), for workloads that keep prompts as arrays."""
    if num_tokens <= 0:
        return _WORDS[:0]
    # What np.random.default_rng(seed) builds (the same stream); the explicit SeedSequence skips
    # PCG64's checks of what it was given, about a fifth of the generator's setup.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(seed))))
    return _WORDS[rng.integers(0, len(_WORDS), size=num_tokens)]


def chained_tokens(seed: Sequence[int], num_tokens: int) -> list[int]:
    """A long sequence built from seeded blocks, so every prefix is the same whatever `num_tokens` is."""
    ids: list[int] = chained_token_array(seed, num_tokens).tolist()
    return ids


def chained_token_array(seed: Sequence[int], num_tokens: int) -> npt.NDArray[np.int32]:
    """`chained_tokens` as a 32-bit array (the same ids)."""
    parts = [
        random_token_array([*seed, block], min(BLOCK_TOKENS, num_tokens - start))
        for block, start in enumerate(range(0, max(num_tokens, 0), BLOCK_TOKENS))
    ]
    return np.concatenate(parts) if parts else _WORDS[:0]


def detokenize(token_ids: Sequence[int]) -> str:
    """The text of `token_ids` in DeepSeek's vocabulary (word tokens: it re-tokenizes to the same ids)."""
    return deepseek().decode(token_ids)
