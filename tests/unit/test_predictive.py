"""core/predictive.py: the token model's next-token distribution and the segment scores."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from supernode.core import predictive, tokens

if TYPE_CHECKING:
    from _typeshed import TraceFunction


def test_no_earlier_match_is_uniform():
    dist = predictive.Predictor([300, 301, 302, 303, 304]).distribution(4)
    assert dist.support == {} and dist.entropy() == pytest.approx(math.log(tokens.VOCAB_SIZE))


def test_probabilities_sum_to_one_and_entropy_is_bounded():
    rng = random.Random(2)
    for _ in range(50):
        seq = [rng.randrange(260, 268) for _ in range(rng.randint(5, 300))]
        pred = predictive.Predictor(seq)
        pos = rng.randrange(len(seq))
        d = pred.distribution(pos)
        total = sum(d.support.values()) + (tokens.VOCAB_SIZE - len(d.support)) * d.rest
        assert total == pytest.approx(1.0)
        assert 0 <= d.entropy() <= math.log(tokens.VOCAB_SIZE) + 1e-9


def test_the_generated_token_has_match_mass_and_is_the_mode_when_followers_agree():
    rng = random.Random(4)
    for _ in range(200):
        seq = [rng.randrange(260, 266) for _ in range(rng.randint(8, 200))]
        pred = predictive.Predictor(seq)
        d = pred.distribution(len(seq) - 1)
        generated = tokens.next_token(seq, seed=1)
        if d.support:  # an earlier match exists: the model copies one of its followers
            assert d.prob(generated) > d.rest
            followers = {t for n in tokens.MATCH_LENGTHS for t in pred.followers(len(seq) - 1, n)}
            if len(followers) == 1:
                assert d.mode() == generated
        else:
            assert generated >= tokens.FIRST_WORD_TOKEN  # a pseudo-random word: nothing to copy


def test_followers_agree_with_a_brute_force_scan():
    rng = random.Random(9)
    for _ in range(100):
        seq = [rng.randrange(0, 4) * 70000 + rng.randrange(2) for _ in range(rng.randint(5, 120))]
        pred = predictive.Predictor(seq)
        pos = rng.randrange(len(seq))
        for n in tokens.MATCH_LENGTHS:
            expected: dict[int, int] = {}
            if n <= pos:
                suffix = seq[pos - n + 1 : pos + 1]
                for end in range(n - 1, pos):  # occurrence seq[end-n+1 : end+1], follower end+1 <= pos
                    if seq[end - n + 1 : end + 1] == suffix:
                        expected[seq[end + 1]] = expected.get(seq[end + 1], 0) + 1
            assert dict(pred.followers(pos, n)) == expected


def test_a_segment_holding_the_passage_the_question_asks_about_scores_lower():
    filler = tokens.encode("The grass is green. The sky is blue. The sun is yellow. Here we go. " * 20)
    needle = tokens.encode("The pass key is 48213. Remember it. 48213 is the pass key. ")
    question = tokens.encode("What is the pass key? The pass key is")
    with_needle = filler[:600] + needle + filler[600:]
    for fn in ("mean_entropy", "question_nll"):
        assert predictive.score_segment(with_needle, question, fn) < predictive.score_segment(
            filler, question, fn
        ), fn
    # The last position alone cannot tell them apart: both contexts follow "...y is" with a space.
    last = [predictive.score_segment(s, question, "last_entropy") for s in (with_needle, filler)]
    assert last[0] == pytest.approx(last[1])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="score_fn"):
        predictive.score_segment([1], [2], "perplexity")
    with pytest.raises(ValueError, match="question"):
        predictive.score_segment([1], [], "mean_entropy")


def _lines_run(call: Callable[[], object]) -> int:
    """Python lines of core/predictive.py that `call` executes."""
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> TraceFunction:
        nonlocal count
        count += event == "line"
        return local

    def enter(frame: FrameType, event: str, arg: Any) -> TraceFunction | None:
        return local if frame.f_code.co_filename == predictive.__file__ else None

    previous = sys.gettrace()
    sys.settrace(enter)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


def test_scoring_does_no_python_work_per_segment_token():
    """Matching runs in C (bytes.find on the packed context), once per question position and suffix
    length: a segment ten times longer runs the very same Python lines. Its tokens are ones the
    question never uses, so there is no occurrence to count and any difference is per-token work."""
    rng = random.Random(1)
    question = tokens.encode("What is the pass key? The pass key is" + " " * 27)
    first_unused = max(question) + 1
    short, long = ([rng.randrange(first_unused, tokens.VOCAB_SIZE) for _ in range(n)] for n in (4000, 40000))
    num_short = _lines_run(lambda: predictive.score_segment(short, question))
    assert num_short > 0 and _lines_run(lambda: predictive.score_segment(long, question)) == num_short


# -- logprobs along a generated sequence (the HTTP API's `logprobs`, emulated)


def _follow(context: list[int], seed: int, count: int, num_top: int) -> list[predictive.TokenLogprob]:
    model = tokens.TokenModel(context, seed)
    logprobs = predictive.SequenceLogprobs(context, seed)
    out = []
    for _ in range(count):
        token = model.next_token()
        model.append(token)
        out.append(logprobs.step(token, num_top))
    return out


def test_logprobs_are_valid_sorted_and_deterministic() -> None:
    context = [300 + i % 9 for i in range(40)] + [5000, 5001]
    entries = _follow(context, 3, 30, num_top=5)
    assert entries == _follow(context, 3, 30, num_top=5)
    for entry in entries:
        probs = [math.exp(lp) for _, lp in entry.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert len({t for t, _ in entry.top}) == 5
        assert dict(entry.top).get(entry.token_id, entry.logprob) == entry.logprob <= 0


def test_a_copied_token_is_likely_and_a_drawn_word_is_not() -> None:
    repeated = [300 + i % 9 for i in range(60)]  # every suffix occurred before: the model copies
    copied = _follow(repeated, 0, 1, 1)[0]
    assert copied.top[0][0] == copied.token_id and math.exp(copied.logprob) > 0.9
    fresh = _follow([7, 8, 9], 0, 1, 0)[0]  # nothing matches: a drawn word, no better than any token
    assert fresh.logprob == pytest.approx(-math.log(tokens.VOCAB_SIZE)) and fresh.top == ()


def test_top_logprobs_is_bounded() -> None:
    with pytest.raises(ValueError, match="top_logprobs"):
        predictive.SequenceLogprobs([1], 0).step(5, predictive.MAX_TOP + 1)
