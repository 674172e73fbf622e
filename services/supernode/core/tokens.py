"""Tokens: a reversible byte-level tokenizer and the deterministic in-context token model.

Token ids 0..255 are the UTF-8 bytes of text; 256 is end-of-sequence; 257..VOCAB_SIZE-1 are "words"
that only the token model emits, rendered as a deterministic pseudo-word each. `encode` then `decode`
gives back the text exactly.

The token model stands in for DeepSeek-R1's weights. Given the context (prompt + tokens so far) it
continues by copying: it finds the longest suffix of the context (of 16, 8 or 4 tokens) that occurred
earlier and emits the token that followed its latest occurrence; with no earlier match it emits a
pseudo-random word drawn from a hash of (seed, position, last token). Words are ids of DeepSeek's BPE
vocabulary that spell a space and a lowercase word (`core.vocab_words`), so under the `deepseek`
tokenizer output text re-tokenizes to the same ids, and under `byte` they render as pseudo-words.
The same prompt and seed give the same tokens on any worker and at any batch size, so retries and
recovery are checkable and retrieval-style prompts have checkable answers.

End of sequence: a request that does not ignore EOS gets an `EosPlan` (`plan_eos`): its natural
output length is drawn from a configurable distribution (`OutputLengths`), seeded by the prompt and
the seed, and the model emits the end-of-sequence id at that position.
"""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from supernode.core.vocab_words import word_ids

VOCAB_SIZE = 129_280  # DeepSeek-R1 vocabulary (reference section 9)
NUM_BYTE_TOKENS = 256
EOS_TOKEN = 256
FIRST_WORD_TOKEN = 257
MATCH_LENGTHS = (16, 8, 4)  # suffix lengths tried, longest first
WORD_TOKENS = word_ids()  # what the model draws when nothing matches (DeepSeek BPE word ids)
MIN_NATURAL_LENGTH = 2  # the first token comes from prefill, which never ends a sequence

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "da", "pe", "zu", "ha", "ri", "go", "be", "ny")


def encode(text: str) -> list[int]:
    """Token ids of `text` (its UTF-8 bytes)."""
    return list(text.encode("utf-8"))


def decode(token_ids: Sequence[int]) -> str:
    """Text of `token_ids`: bytes as text (invalid UTF-8 replaced), words as ' <word>', EOS as ''."""
    out: list[str] = []
    pending = bytearray()
    for token in token_ids:
        if token < NUM_BYTE_TOKENS:
            pending.append(token)
            continue
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
            pending.clear()
        if token >= FIRST_WORD_TOKEN:
            out.append(" " + word(token))
    if pending:
        out.append(pending.decode("utf-8", errors="replace"))
    return "".join(out)


def word(token: int) -> str:
    """The pseudo-word a word token renders as (two to four syllables picked by its id)."""
    n = token - FIRST_WORD_TOKEN
    syllables = []
    for _ in range(2 + n % 3):
        syllables.append(_SYLLABLES[n % len(_SYLLABLES)])
        n //= len(_SYLLABLES)
    return "".join(syllables)


def is_valid_token(token: int) -> bool:
    return 0 <= token < VOCAB_SIZE


def packed_ids(token_ids: Sequence[int]) -> array[int]:
    """Valid token ids as a native 32-bit unsigned array: a copy of its memory when they already are
    one of 32-bit ids (a `first_invalid_token` check must have passed), else each id converted
    (OverflowError for one outside 0..2**32-1)."""
    if _is_32bit_array(token_ids):
        return array("I", token_ids.tobytes())
    return array("I", token_ids)


def _is_32bit_array(token_ids: Iterable[int]) -> TypeGuard[array[int]]:
    """True for an array of 32-bit ints, signed or not."""
    return isinstance(token_ids, array) and token_ids.typecode in "iI" and token_ids.itemsize == 4


def is_uint32_array(token_ids: Iterable[int]) -> TypeGuard[array[int]]:
    """True for an array('I') of 32-bit ids (its bytes are then the ids' native uint32 packing)."""
    return _is_32bit_array(token_ids) and token_ids.typecode == "I"


def first_invalid_token(token_ids: Sequence[int]) -> int | None:
    """The first token outside the vocabulary, None when all are valid (checked at C speed first)."""
    if not len(token_ids) or _are_valid_int32(token_ids):
        return None
    if min(token_ids) >= 0 and max(token_ids) < VOCAB_SIZE:  # ints past 32 bits, or int-like values
        return None
    return next(t for t in token_ids if not is_valid_token(t))


def _are_valid_int32(token_ids: Sequence[int]) -> bool:
    """True when every id is a 32-bit int in the vocabulary; False also when one is not a 32-bit int.
    Copying a list into a 32-bit array and taking numpy's maximum costs about a third of two
    passes of min() and max() over Python ints; an array of 32-bit ids (as prompts travel in the
    load generator) is read in place."""
    packed: array[int]
    if _is_32bit_array(token_ids):
        packed = token_ids
    else:
        try:
            packed = array("i", token_ids)
        except (OverflowError, TypeError):
            return False
    # Read as unsigned, a negative id is at least 2**31: one maximum checks both ends (the ufunc's
    # own reduce: ndarray.max's Python wrapper costs more than the pass over a prompt).
    return len(packed) == 0 or int(np.maximum.reduce(np.frombuffer(packed, np.uint32))) < VOCAB_SIZE


@dataclass(frozen=True, slots=True)
class EosPlan:
    """Where a sequence ends: the model emits `token_id` as the token at index `position` of the
    context (prompt length + natural output length - 1)."""

    token_id: int
    position: int


@dataclass(frozen=True, slots=True)
class OutputLengths:
    """The distribution of natural output lengths (tokens): `lognormal:MEDIAN:SIGMA`,
    `uniform:LOW:HIGH`, `geometric:MEAN` or `fixed:N`."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> OutputLengths:
        """Raises ValueError naming the rule on a malformed spec."""
        kind, *args = text.strip().split(":")
        arity = {"lognormal": 2, "uniform": 2, "geometric": 1, "fixed": 1}
        if kind not in arity or len(args) != arity[kind]:
            raise ValueError(
                "output lengths: use lognormal:MEDIAN:SIGMA, uniform:LOW:HIGH, geometric:MEAN or fixed:N"
            )
        try:
            values = [float(a) for a in args]
        except ValueError:
            raise ValueError(f"output lengths: {text!r} has a non-numeric parameter") from None
        bad_second = (kind == "uniform" and values[1] < values[0]) or (kind == "lognormal" and values[1] < 0)
        if values[0] < 1 or bad_second:
            raise ValueError(f"output lengths: {text!r} is out of range (lengths >= 1, sigma >= 0)")
        return cls(kind, values[0], values[1] if len(values) > 1 else 0.0)

    def draw(self, rng: random.Random) -> int:
        if self.kind == "lognormal":
            value = self.a * math.exp(rng.gauss(0.0, self.b))
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        elif self.kind == "geometric":
            value = 1 + math.log(1.0 - rng.random()) / math.log(1.0 - 1.0 / max(self.a, 1.0 + 1e-9))
        else:
            value = self.a
        return max(MIN_NATURAL_LENGTH, round(value))


def natural_length(prompt: Sequence[int], seed: int, lengths: OutputLengths) -> int:
    """How many tokens the model writes for `prompt` and `seed` before it ends (EOS included)."""
    digest = hashlib.blake2b(array("I", prompt).tobytes(), digest_size=8, key=b"eos" + str(seed).encode())
    return lengths.draw(random.Random(int.from_bytes(digest.digest(), "little")))


def plan_eos(
    prompt: Sequence[int], seed: int, lengths: OutputLengths, eos_token_id: int, min_tokens: int = 0
) -> EosPlan:
    """The end of the sequence for this request: never before `min_tokens` output tokens."""
    length = max(natural_length(prompt, seed, lengths), min_tokens)
    return EosPlan(eos_token_id, len(prompt) + length - 1)


def next_token(context: Sequence[int], seed: int, eos: EosPlan | None = None) -> int:
    """The token the model emits after `context`, without building its index (for one token).

    Same answer as TokenModel(context, seed, eos).next_token(): the follower of the latest earlier
    occurrence of the longest matching suffix, searched in the packed context with bytes.rfind.
    """
    n_tokens = len(context)
    if eos is not None and n_tokens >= eos.position:
        return eos.token_id
    if n_tokens == 0:
        return random_word(seed, 0, 0)
    packed = context.tobytes() if is_uint32_array(context) else array("I", context).tobytes()
    for n in MATCH_LENGTHS:
        if n >= n_tokens:
            continue
        suffix = packed[(n_tokens - n) * 4 :]
        # An earlier occurrence must end by the last token, so that its follower is in the context.
        end = (n_tokens - 1) * 4
        pos = packed.rfind(suffix, 0, end)
        while pos > 0 and pos % 4:  # a match across token boundaries: look further left
            pos = packed.rfind(suffix, 0, pos + len(suffix) - 1)
        if pos >= 0 and pos % 4 == 0:
            return context[pos // 4 + n]
    return random_word(seed, n_tokens, context[-1])


def random_word(seed: int, position: int, previous: int) -> int:
    """A pseudo-random word token for (seed, position, previous token); stable across processes."""
    digest = hashlib.blake2b(f"{seed}:{position}:{previous}".encode(), digest_size=8).digest()
    return WORD_TOKENS[int.from_bytes(digest, "little") % len(WORD_TOKENS)]


class TokenModel:
    """The deterministic next-token model for one sequence; constant work per token.

    It indexes the context's n-grams of each length in MATCH_LENGTHS by the token that followed them,
    so the longest earlier match of the current suffix is one dictionary look-up per length.
    """

    def __init__(self, context: Sequence[int], seed: int, eos: EosPlan | None = None) -> None:
        self.seed = seed
        self.eos = eos
        self.tokens: list[int] = []
        self._next_after: dict[tuple[int, ...], int] = {}
        for token in context:
            self.append(token)

    def append(self, token: int) -> None:
        """Adds a token to the context (prompt token or one just generated)."""
        self.tokens.append(token)
        end = len(self.tokens) - 1
        # Record, for each n-gram ending just before `token`, that `token` followed it.
        for n in MATCH_LENGTHS:
            if n <= end:
                self._next_after[tuple(self.tokens[end - n : end])] = token

    def next_token(self) -> int:
        """The token that follows the current context."""
        tokens = self.tokens
        if self.eos is not None and len(tokens) >= self.eos.position:
            return self.eos.token_id
        for n in MATCH_LENGTHS:
            if n > len(tokens):
                continue
            follower = self._next_after.get(tuple(tokens[len(tokens) - n :]))
            if follower is not None:
                return follower
        previous = tokens[-1] if tokens else 0
        return random_word(self.seed, len(tokens), previous)

    def generate(self, count: int) -> list[int]:
        """Generates and appends `count` tokens."""
        out = []
        for _ in range(count):
            token = self.next_token()
            self.append(token)
            out.append(token)
        return out


class IncrementalDetokenizer:
    """Detokenizes a stream chunk by chunk without splitting a UTF-8 character across chunks."""

    def __init__(self) -> None:
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_ids: Sequence[int]) -> str:
        out: list[str] = []
        for token in token_ids:
            if token < NUM_BYTE_TOKENS:
                out.append(self._decoder.decode(bytes((token,))))
            else:
                out.append(self._decoder.decode(b"", final=True))
                if token >= FIRST_WORD_TOKEN:
                    out.append(" " + word(token))
        return "".join(out)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
