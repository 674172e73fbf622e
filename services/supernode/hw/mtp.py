"""Multi-token prediction: the one definition of how many tokens a decode step emits.

With depth d, a step verifies d draft tokens per sequence. Drafts are accepted one after another, each
with probability p, until one fails ([v3] §4.2.4; the paper assumes p = 0.7 at d = 1, §5.2). The cost
model prices a step with the expectation; the decode scheduler draws the same process per sequence.
"""

from __future__ import annotations

from collections.abc import Callable


def _check(depth: int, accept: float) -> None:
    if depth < 0 or not 0.0 <= accept <= 1.0:
        raise ValueError(f"mtp depth must be >= 0 and acceptance in [0, 1] (got {depth}, {accept})")


def expected_tokens_per_step(depth: int, accept: float) -> float:
    """Expected tokens per sequence per step: 1 + p + p^2 + ... + p^d."""
    _check(depth, accept)
    return sum(accept**k for k in range(depth + 1))


def accepted_drafts(depth: int, accept: float, draw: Callable[[], float]) -> int:
    """Drafts accepted in one step; `draw` returns uniform numbers in [0, 1) (the caller's seeded RNG)."""
    _check(depth, accept)
    accepted = 0
    while accepted < depth and draw() < accept:
        accepted += 1
    return accepted


def step_totals(depth: int, accept: float, draw: Callable[[], float], num_tokens: int) -> list[int]:
    """Tokens emitted in all after each step until `num_tokens` are out (the last step emits only what
    is left): the draws `accepted_drafts` makes step after step, in the same order, in one loop."""
    _check(depth, accept)
    totals: list[int] = []
    append = totals.append
    total = 0
    if depth == 1:  # the paper's depth: exactly one draw per step
        while total < num_tokens:
            total += 2 if draw() < accept else 1
            if total > num_tokens:
                total = num_tokens
            append(total)
        return totals
    while total < num_tokens:
        accepted = 0
        while accepted < depth and draw() < accept:
            accepted += 1
        total = min(total + 1 + accepted, num_tokens)
        totals.append(total)
    return totals
