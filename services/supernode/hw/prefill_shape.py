"""Where a prefill batch's work lands: the busiest die's share under SP packing or DP placement."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from supernode.hw.specs import PrefillDeployment


@dataclass(frozen=True, slots=True)
class Shape:
    """The busiest die's work in one layer."""

    tokens: float  # its own new tokens (SP chunk, or the DP sequences placed on it)
    tp_tokens: float  # new tokens whose attention it computes for its heads (all of them under TP)
    pairs: float  # causal (query, key) pairs of the attention it computes (all heads of its sequences)
    cached: float  # cached prefix tokens whose K/V it re-expands
    head_frac: float  # share of the heads it computes


def pairs(new: int, cached: int) -> float:
    """Causal (query, key) pairs of `new` tokens after `cached` prefix tokens."""
    return new * cached + new * (new + 1) / 2


def _dp_busiest(new: Sequence[int], cached: Sequence[int], num_dies: int) -> tuple[float, float, float]:
    """Longest-processing-time placement of whole sequences: the busiest die's (tokens, pairs, cached)."""
    heap = [(0.0, 0.0, 0.0, float(i)) for i in range(num_dies)]  # (pairs, tokens, cached, die)
    for n, c in sorted(zip(new, cached, strict=True), key=lambda x: -pairs(*x)):
        p, tokens, cach, i = heapq.heappop(heap)
        heapq.heappush(heap, (p + pairs(n, c), tokens + n, cach + c, i))
    p, tokens, cach, _ = max(heap)
    return tokens, p, cach


def shape(dep: PrefillDeployment, new: Sequence[int], cached: Sequence[int]) -> Shape:
    """The busiest die's share. SP packs the batch's tokens in chunks of ceil(total / dies): when the total
    does not divide, the full chunks are the stragglers every other die waits for."""
    n = dep.num_dies
    if dep.attention == "dp":
        tokens, p, cach = _dp_busiest(new, cached, n)
        return Shape(tokens, tokens, p, cach, 1.0)
    total_pairs = sum(pairs(a, b) for a, b in zip(new, cached, strict=True))
    head_frac = math.ceil(dep.model.num_heads / n) / dep.model.num_heads
    chunk = float(math.ceil(sum(new) / n))
    return Shape(chunk, float(sum(new)), total_pairs, float(sum(cached)), head_frac)


def busiest_head_tokens(dep: PrefillDeployment, new: Sequence[int], heads: Sequence[int]) -> float:
    """Vocabulary-projection positions on the busiest die: each sequence's last `heads[i]` positions, on
    the die whose SP chunk (or DP placement) holds them."""
    n = dep.num_dies
    if dep.attention == "dp" or n == 1:
        return float(math.ceil(sum(heads) / n)) if n > 1 else float(sum(heads))
    chunk = max(1, math.ceil(sum(new) / n))
    per_die = [0] * n
    end = 0
    for length, k in zip(new, heads, strict=True):
        end += length
        pos = end - k
        while pos < end:
            die = min(n - 1, pos // chunk)
            upto = min(end, (die + 1) * chunk)
            per_die[die] += upto - pos
            pos = upto
    return float(max(per_die))
