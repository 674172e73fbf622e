"""core/predictive.py: the token model's next-token distribution and the segment scores."""

from __future__ import annotations

import math
import random
import time

import pytest

from supernode.core import predictive, tokens


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


def test_a_segment_of_thousands_of_tokens_scores_in_milliseconds():
    rng = random.Random(1)
    text = "".join(rng.choice(["alpha ", "beta ", "gamma ", "delta. "]) for _ in range(800))
    segment = tokens.encode(text)[:4000]
    question = tokens.encode("What is the pass key? The pass key is" + " " * 27)
    start = time.perf_counter()
    predictive.score_segment(segment, question)
    assert time.perf_counter() - start < 0.5  # generous: a shared 2-core machine
