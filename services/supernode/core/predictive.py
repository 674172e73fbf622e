"""The token model's predictive distribution, and the segment scores XL3M ranks by. Pure.

`core/tokens.py` generates by copying: after a context it emits the follower of the latest earlier
occurrence of the longest matching suffix (16, 8 or 4 tokens), else a pseudo-random word. The
distribution here is the probabilistic reading of that rule: each suffix length n that has earlier
occurrences gets mass proportional to n (longer matches are more certain), split among the tokens
that followed those occurrences by how often each did; a share `smoothing` is spread uniformly over
the vocabulary. With no earlier match at all the model knows nothing: the uniform distribution,
entropy ln(V). So a context that already holds the passage a question refers to is more certain at
the question's positions than one that does not — the premise XL3M relies on.

Matching is done on the packed context (array of uint32 as bytes, searched with bytes.find in C),
once per question position and suffix length, so a segment of thousands of tokens costs
milliseconds, not a Python loop over every token.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from supernode.core.tokens import MATCH_LENGTHS, VOCAB_SIZE, random_word

SMOOTHING = 0.01  # ASSUMPTION: 1% of the mass on tokens never seen after the suffix (a model is rarely sure)
_WIDTH = 4  # bytes per packed token


@dataclass(frozen=True, slots=True)
class NextTokenDist:
    """A distribution over the vocabulary: explicit probabilities on `support`, `rest` on every other
    token (there are VOCAB_SIZE - len(support) of them)."""

    support: dict[int, float]
    rest: float

    def prob(self, token: int) -> float:
        return self.support.get(token, self.rest)

    def entropy(self) -> float:
        """Shannon entropy in nats."""
        h = -sum(p * math.log(p) for p in self.support.values() if p > 0)
        num_rest = VOCAB_SIZE - len(self.support)
        if self.rest > 0:
            h -= num_rest * self.rest * math.log(self.rest)
        return h

    def mode(self) -> int | None:
        """The most probable token, or None when the distribution is uniform."""
        if not self.support:
            return None
        return max(self.support.items(), key=lambda kv: kv[1])[0]


class Predictor:
    """Next-token distributions over one sequence, at any position, without indexing every token."""

    def __init__(self, tokens: Sequence[int], smoothing: float = SMOOTHING) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self.tokens = tokens if isinstance(tokens, array) else array("I", tokens)
        self.packed = self.tokens.tobytes()
        self.smoothing = smoothing

    def followers(self, pos: int, n: int) -> Counter[int]:
        """Tokens that followed earlier occurrences of tokens[pos-n+1 : pos+1], with counts.

        An occurrence must end before `pos` so that its follower lies within tokens[: pos+1] (the
        same rule as tokens.next_token)."""
        out: Counter[int] = Counter()
        if n > pos:
            return out
        packed, width = self.packed, _WIDTH
        needle = packed[(pos - n + 1) * width : (pos + 1) * width]
        limit = pos * width  # the occurrence must lie in tokens[0 : pos]
        at = packed.find(needle, 0, limit)
        while at >= 0:
            if at % width == 0:
                out[self.tokens[at // width + n]] += 1
                at = packed.find(needle, at + width, limit)
            else:
                at = packed.find(needle, at + 1, limit)
        return out

    def distribution(self, pos: int) -> NextTokenDist:
        """The distribution of the token after tokens[: pos+1]."""
        levels = [(n, f) for n in MATCH_LENGTHS if (f := self.followers(pos, n))]
        if not levels:
            return NextTokenDist({}, 1.0 / VOCAB_SIZE)
        total_weight = sum(n for n, _ in levels)
        mass: dict[int, float] = {}
        for n, counts in levels:
            share = (1 - self.smoothing) * n / total_weight
            num = sum(counts.values())
            for token, c in counts.items():
                mass[token] = mass.get(token, 0.0) + share * c / num
        rest = self.smoothing / VOCAB_SIZE
        return NextTokenDist({t: p + rest for t, p in mass.items()}, rest)


ScoreFn = Callable[[Predictor, int], float]


def mean_entropy(pred: Predictor, num_question: int) -> float:
    """Mean entropy (nats) of the next-token distribution after each of the last `num_question`
    positions (the question's). The default score (ASSUMPTION: XL3M's 'certainty' read as entropy
    at the question positions, averaged)."""
    end = len(pred.tokens)
    positions = range(end - num_question, end)
    return sum(pred.distribution(p).entropy() for p in positions) / len(positions)


def last_entropy(pred: Predictor, num_question: int) -> float:
    """Entropy (nats) of the distribution after the last token only."""
    return pred.distribution(len(pred.tokens) - 1).entropy()


def question_nll(pred: Predictor, num_question: int) -> float:
    """Mean negative log-likelihood (nats) of the question's tokens, each given what precedes it
    (the first question token given the segment alone)."""
    end = len(pred.tokens)
    start = max(1, end - num_question)
    nll = 0.0
    for p in range(start, end):
        nll -= math.log(pred.distribution(p - 1).prob(pred.tokens[p]))
    return nll / (end - start)


SCORE_FNS: dict[str, ScoreFn] = {
    "mean_entropy": mean_entropy,
    "last_entropy": last_entropy,
    "question_nll": question_nll,
}


def score_segment(segment: Sequence[int], question: Sequence[int], score_fn: str = "mean_entropy") -> float:
    """The score of sub-context [segment, question] (lower = more certain = more relevant)."""
    if not question:
        raise ValueError("question must hold at least one token")
    fn = SCORE_FNS.get(score_fn)
    if fn is None:
        raise ValueError(f"score_fn must be one of {sorted(SCORE_FNS)}")
    seq = array("I", segment)
    seq.extend(question)
    return fn(Predictor(seq), len(question))


# -- logprobs: the same distribution, read token by token along a generated sequence

MAX_TOP = 20  # alternatives a caller may ask for (OpenAI's bound)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float  # natural log of the emitted token's probability under the distribution
    top: tuple[tuple[int, float], ...]  # (token id, logprob): the `num_top` most likely, most likely first


class SequenceLogprobs:
    """Follows one generated sequence and gives each emitted token's logprob and the most likely
    alternatives, from the same distribution XL3M scores with. Emulated: a drawn word after a context
    with no earlier match is as likely as any other token (1 / vocabulary)."""

    def __init__(self, context: Sequence[int], seed: int, smoothing: float = SMOOTHING) -> None:
        self.tokens = array("I", context)
        self.seed = seed
        self.smoothing = smoothing

    def step(self, emitted: int, num_top: int) -> TokenLogprob:
        """The distribution `emitted` was drawn from; then `emitted` joins the context."""
        if not 0 <= num_top <= MAX_TOP:
            raise ValueError(f"top_logprobs: must be between 0 and {MAX_TOP}")
        if self.tokens:
            dist = Predictor(self.tokens, self.smoothing).distribution(len(self.tokens) - 1)
        else:
            dist = NextTokenDist({}, 1.0 / VOCAB_SIZE)
        logprob = math.log(dist.prob(emitted))
        top = self._top(dist, num_top)
        self.tokens.append(emitted)
        return TokenLogprob(emitted, logprob, top)

    def _top(self, dist: NextTokenDist, num_top: int) -> tuple[tuple[int, float], ...]:
        ranked = sorted(dist.support.items(), key=lambda kv: (-kv[1], kv[0]))[:num_top]
        seen = {t for t, _ in ranked}
        previous = self.tokens[-1] if self.tokens else 0
        j = 0
        while len(ranked) < num_top:  # ties at `rest`: deterministic words stand for them
            j += 1
            word = random_word(self.seed + j, len(self.tokens), previous)
            if word not in seen:
                ranked.append((word, dist.rest))
                seen.add(word)
        return tuple((t, math.log(p)) for t, p in ranked)
