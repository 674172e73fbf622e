"""The token model's predictive distribution behind `logprobs` (issue item 4): valid, deterministic,
and consistent with what the model emits."""

from __future__ import annotations

import math

import pytest

from supernode.core import predictive, tokens


def follow(context: list[int], seed: int, count: int, num_top: int) -> list[predictive.TokenLogprob]:
    model = tokens.TokenModel(context, seed)
    predictor = predictive.Predictor(context, seed, eos_token_id=1)
    out = []
    for _ in range(count):
        token = model.next_token()
        model.append(token)
        out.append(predictor.step(token, num_top))
    return out


def test_distribution_is_valid_sorted_and_deterministic() -> None:
    context = [300 + i % 9 for i in range(40)] + [5000, 5001]
    entries = follow(context, 3, 30, num_top=5)
    assert entries == follow(context, 3, 30, num_top=5)
    for entry in entries:
        probs = [math.exp(lp) for _, lp in entry.top]
        assert entry.top[0] == (entry.token_id, entry.logprob)  # the emitted token is the most likely
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-12
        assert len({t for t, _ in entry.top}) == 5


def test_confidence_follows_the_evidence() -> None:
    repeated = [300 + i % 9 for i in range(60)]  # every 16-token suffix occurred before
    copied = follow(repeated, 0, 1, 0)[0]
    assert copied.logprob == pytest.approx(math.log(predictive.CONFIDENCE[16])) and copied.top == ()
    fresh = follow([7, 8, 9], 0, 1, 0)[0]  # nothing matches: a drawn word
    assert fresh.logprob == pytest.approx(math.log(predictive.DRAWN_WORD))
    end = predictive.Predictor([7, 8, 9], 0, eos_token_id=1).step(1, 2)
    assert end.logprob == pytest.approx(math.log(predictive.END_OF_SEQUENCE))


def test_top_is_bounded() -> None:
    with pytest.raises(ValueError, match="top_logprobs"):
        predictive.Predictor([1], 0, 1).step(5, predictive.MAX_TOP + 1)
