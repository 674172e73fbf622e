"""A counting-only sequence's token plan draws exactly what drawing every step would."""

from __future__ import annotations

import random

import pytest

from supernode.hw.mtp import accepted_drafts, step_totals


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
@pytest.mark.parametrize("accept", [0.0, 0.3, 0.7, 1.0])
def test_step_totals_draw_as_every_step_would(depth: int, accept: float):
    for seed in range(20):
        num_tokens = random.Random(seed).randint(0, 2000)
        plan_rng, step_rng = random.Random(seed), random.Random(seed)
        plan = step_totals(depth, accept, plan_rng.random, num_tokens)
        expect, total = [], 0
        while total < num_tokens:
            total = min(total + 1 + accepted_drafts(depth, accept, step_rng.random), num_tokens)
            expect.append(total)
        assert plan == expect
        assert plan_rng.random() == step_rng.random()  # the same number of draws, no more
