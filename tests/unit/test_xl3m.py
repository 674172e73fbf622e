"""core/xl3m.py: planning, windows, streaming top-K, merge and splice (example and property tests)."""

from __future__ import annotations

import random

import pytest

from supernode.core import xl3m


def test_default_plan_fills_the_window():
    plan = xl3m.make_plan(100_000, 4096, 32, question_tokens=64, kept_segments=4)
    assert plan.segment == (4096 - 32 - 64) // 4 and plan.overlap == plan.segment // 8
    assert plan.kept * plan.segment + plan.num_question + 32 <= 4096


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 4090}, "max_tokens"),
        ({"segment_tokens": 3000}, "segment_tokens"),
        ({"overlap_tokens": 1000, "segment_tokens": 500}, "overlap_tokens"),
        ({"kept_segments": 5000}, "kept_segments"),
    ],
)
def test_plans_that_cannot_fit_name_the_knob(kwargs, field):
    args = {"max_tokens": 32, "question_tokens": 64, "kept_segments": 4} | kwargs
    max_tokens = args.pop("max_tokens")
    with pytest.raises(xl3m.PlanError) as err:
        xl3m.make_plan(100_000, 4096, max_tokens, **args)
    assert err.value.field == field


def test_windows_property_cover_overlap_and_count():
    rng = random.Random(7)
    for _ in range(500):
        seg = rng.randint(1, 300)
        ovl = rng.randint(0, seg - 1)
        n = rng.randint(1, 5000)
        wins = list(xl3m.windows(n, seg, ovl))
        assert len(wins) == xl3m.num_windows(n, seg, ovl)
        assert wins[0][0] == 0 and wins[-1][1] == n
        covered = set()
        for (s0, e0), (s1, _e1) in zip(wins, wins[1:], strict=False):
            assert s1 > s0 and e0 - s1 >= ovl  # strictly advancing, neighbours share >= O tokens
        for s, e in wins:
            assert e - s == min(seg, n)
            covered.update(range(s, e))
        assert covered == set(range(n))
        if n > seg:  # m = ceil((L - O) / (S - O)) as in the reference
            assert len(wins) == -(-(n - ovl) // (seg - ovl))


def test_a_passage_no_longer_than_the_overlap_lies_whole_in_some_window():
    rng = random.Random(3)
    for _ in range(300):
        seg, n = rng.randint(20, 200), rng.randint(300, 3000)
        ovl = rng.randint(1, seg - 1)
        length = rng.randint(1, ovl + 1)
        at = rng.randint(0, n - length)
        assert any(s <= at and at + length <= e for s, e in xl3m.windows(n, seg, ovl))


def test_topk_keeps_the_k_lowest_whatever_the_order_and_holds_at_most_k():
    rng = random.Random(11)
    for _ in range(200):
        k, m, seg = rng.randint(1, 8), rng.randint(1, 60), rng.randint(1, 20)
        scores = [rng.choice([rng.random(), 0.5]) for _ in range(m)]  # ties included
        top = xl3m.TopK(k)
        order = list(range(m))
        rng.shuffle(order)
        for i in order:
            top.push(i, i * seg, i * seg + seg, scores[i], [i] * seg)
            assert len(top) <= k and top.num_tokens_held <= k * seg
        kept = top.kept()
        # the k lowest; among equal scores the later segment wins
        expected = sorted(range(m), key=lambda i: (scores[i], -i))[:k]
        assert sorted(x.index for x in kept) == sorted(expected)
        assert [x.start for x in kept] == sorted(x.start for x in kept)


def test_topk_rejects_a_segment_whose_tokens_do_not_match_its_bounds():
    with pytest.raises(ValueError, match="segment 3"):
        xl3m.TopK(2).push(3, 0, 10, 1.0, [1, 2])


def test_merge_and_splice_reproduce_the_prompt_without_duplicates():
    rng = random.Random(5)
    for _ in range(300):
        n, seg = rng.randint(10, 2000), rng.randint(2, 200)
        ovl = rng.randint(0, seg - 1)
        prompt = [rng.randrange(1000) for _ in range(n)]
        wins = list(xl3m.windows(n, seg, ovl))
        chosen = rng.sample(range(len(wins)), rng.randint(1, len(wins)))
        kept = [xl3m.Kept(i, *wins[i], 0.0, prompt[wins[i][0] : wins[i][1]]) for i in chosen]
        runs = xl3m.merge(kept)
        covered: list[int] = []
        for s, e, toks in runs:
            assert toks == prompt[s:e]
            covered.extend(range(s, e))
        assert covered == sorted(set(covered))  # chronological, no token twice
        assert covered_set(kept) == set(covered)
        question = [7, 8, 9]
        assert xl3m.splice(kept, question) == [t for _, _, toks in runs for t in toks] + question


def covered_set(kept):
    return {p for k in kept for p in range(k.start, k.end)}


def test_whole_flow_keeps_the_marked_segment_and_the_splice_fits():
    n, window, max_tokens = 50_000, 4096, 32
    plan = xl3m.make_plan(n, window, max_tokens, question_tokens=64, kept_segments=4)
    prompt = list(range(n))
    needle = 31_337
    top = xl3m.TopK(plan.kept)
    for i, (s, e) in enumerate(xl3m.windows(plan.num_context, plan.segment, plan.overlap)):
        top.push(i, s, e, 0.0 if s <= needle < e else 1.0 + i % 3, prompt[s:e])
    spliced = xl3m.splice(top.kept(), prompt[plan.num_context :])
    assert needle in spliced and len(spliced) + max_tokens <= window
    assert spliced[-plan.num_question :] == prompt[-plan.num_question :]
    assert plan.num_scoring_tokens == sum(
        e - s + plan.num_question for s, e in xl3m.windows(plan.num_context, plan.segment, plan.overlap)
    )


def test_truncate_keeps_the_tail():
    assert xl3m.truncate([1, 2, 3, 4], 2) == [3, 4]
    with pytest.raises(xl3m.PlanError):
        xl3m.truncate([1], 0)
