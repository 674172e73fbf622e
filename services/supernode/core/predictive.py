"""The token model's next-token predictive distribution, for `logprobs` (emulated, not DeepSeek-R1's).

The token model (`core.tokens`) is deterministic: it copies the follower of the longest earlier match
of the context's suffix (16, 8 or 4 tokens), else draws a seeded word. Its distribution puts the
emitted token first, with a probability that grows with the evidence for it (`CONFIDENCE`: a longer
match, more confidence; a drawn word, little; a planned end of sequence, much), and spreads the rest
over alternatives in a fixed order: the followers of the other matching suffixes, then words drawn
with neighbouring seeds, each taking half of what is left. Probabilities are positive, sum to at most
1, and come sorted; the same context and seed give the same distribution on any process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from supernode.core.tokens import MATCH_LENGTHS, random_word

CONFIDENCE = {16: 0.95, 8: 0.85, 4: 0.7}  # P(emitted) when it follows a match of this length
DRAWN_WORD = 0.4  # P(emitted) when no suffix matched and the word was drawn
END_OF_SEQUENCE = 0.9  # P(emitted) for the planned end-of-sequence token
MAX_TOP = 20  # alternatives a caller may ask for (OpenAI's bound)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float  # natural log of the probability
    top: tuple[tuple[int, float], ...]  # (token id, logprob), most likely first, the emitted one included


class Predictor:
    """Follows one sequence token by token and gives each emitted token's distribution."""

    def __init__(self, context: Sequence[int], seed: int, eos_token_id: int) -> None:
        self.seed = seed
        self.eos_token_id = eos_token_id
        self.tokens: list[int] = []
        self._follower: dict[tuple[int, ...], int] = {}
        for token in context:
            self._append(token)

    def step(self, emitted: int, num_top: int) -> TokenLogprob:
        """The distribution the token `emitted` was drawn from, then `emitted` joins the context."""
        if not 0 <= num_top <= MAX_TOP:
            raise ValueError(f"top_logprobs: must be between 0 and {MAX_TOP}")
        ranked = self._ranked(emitted, max(num_top, 1))
        self._append(emitted)
        logprobs = tuple((t, math.log(p)) for t, p in ranked)
        return TokenLogprob(emitted, logprobs[0][1], logprobs if num_top else ())

    def _ranked(self, emitted: int, size: int) -> list[tuple[int, float]]:
        """The `size` most likely tokens with their probabilities; the emitted one first (it is
        always the most likely: every alternative gets at most half of 1 - P(emitted) <= 0.6)."""
        followers = self._followers()
        if emitted == self.eos_token_id:
            p = END_OF_SEQUENCE
        else:
            p = next((CONFIDENCE[n] for n, t in followers if t == emitted), DRAWN_WORD)
        ranked = [(emitted, p)]
        seen = {emitted}
        remaining = 1.0 - p
        candidates = [t for _, t in followers]
        previous = self.tokens[-1] if self.tokens else 0
        candidates += [random_word(self.seed + j, len(self.tokens), previous) for j in range(1, 2 * MAX_TOP)]
        for token in candidates:
            if len(ranked) >= size:
                break
            if token in seen:
                continue
            remaining /= 2
            ranked.append((token, remaining))
            seen.add(token)
        return ranked

    def _followers(self) -> list[tuple[int, int]]:
        """(match length, follower) of every suffix length that occurred earlier, longest first."""
        out = []
        for n in MATCH_LENGTHS:
            if n <= len(self.tokens):
                follower = self._follower.get(tuple(self.tokens[len(self.tokens) - n :]))
                if follower is not None:
                    out.append((n, follower))
        return out

    def _append(self, token: int) -> None:
        self.tokens.append(token)
        end = len(self.tokens) - 1
        for n in MATCH_LENGTHS:
            if n <= end:
                self._follower[tuple(self.tokens[end - n : end])] = token
