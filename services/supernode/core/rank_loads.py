"""Each decode rank's load (sequences, total context) for counting-only sequences, without per-sequence work.

A sequence that only counts its tokens knows at admission how many tokens it holds after each step
(its token plan). Its context on its rank is then a known function of the step, so its changes are
written once, when it joins, into a ring of future per-rank changes (one row per step); a step
applies one row over every rank in numpy. Pricing a step then needs each rank's (sequences, context
sum) and the busiest rank's own lengths, not a pass over every sequence of the instance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

FEW_RANKS = 16  # up to this many active ranks, the busiest is found without numpy


class RankLoads:
    """Sequences and context tokens per rank during step `step` (the scheduler's next step)."""

    def __init__(self, num_ranks: int, horizon: int = 512) -> None:
        self.num_seqs = np.zeros(num_ranks, np.int64)  # running sequences per rank
        self.num_seqs_total = 0  # their sum
        self.kv_sum = np.zeros(num_ranks, np.int64)  # context tokens per rank during `step`
        self.step = 0
        # Row t % horizon: each rank's change at step t (a run of steps is a contiguous block of rows).
        self._ring = np.zeros((horizon, num_ranks), np.int64)
        # 1 + the highest rank a sequence ever joined: every rank past it holds nothing and has no
        # change in the ring, so sums over the ring stop there (reservations fill the lowest ranks
        # first, so a lightly loaded instance sums a few columns rather than all of them).
        self._width = 0

    @property
    def horizon(self) -> int:
        return int(self._ring.shape[0])

    def join(self, rank: int, base: int, plan: Sequence[int]) -> None:
        """A sequence holding `base` tokens joins `rank` at `step` and emits `plan[i]` tokens (cumulative)
        after its step i; it leaves after its last step, len(plan) steps from now."""
        num = len(plan)
        self._fit(num + 2)
        self._width = max(self._width, rank + 1)
        self.num_seqs[rank] += 1
        self.num_seqs_total += 1
        self.kv_sum[rank] += base
        self._add_row(rank, self.step + 1, self._deltas(base, plan))

    def leave(self, rank: int) -> None:
        """A sequence retired after its planned last step (its context left through the ring)."""
        self.num_seqs[rank] -= 1
        self.num_seqs_total -= 1

    def cancel(self, rank: int, base: int, plan: Sequence[int], start_step: int) -> None:
        """A sequence that joined at `start_step` leaves now, before its plan ran out."""
        done = self.step - start_step  # steps it has run
        held = base + (plan[done - 1] if done > 0 else 0)
        self.num_seqs[rank] -= 1
        self.num_seqs_total -= 1
        self.kv_sum[rank] -= held
        self._add_row(rank, start_step + 1 + done, -self._deltas(base, plan)[done:])

    def advance(self, to_step: int) -> None:
        """Applies every change up to and including step `to_step`."""
        if to_step <= self.step:
            return
        w = self._width
        for part in self._spans(self.step + 1, min(to_step - self.step, self.horizon)):
            self.kv_sum[:w] += _sum_rows(self._ring[part, :w])
            self._ring[part, :w] = 0
        self.step = to_step

    def kv_sum_at(self, ahead: int) -> np.ndarray:
        """Context tokens per rank during step `step + ahead` if nothing joins or leaves early."""
        if ahead <= 0:
            return self.kv_sum
        out = self.kv_sum.copy()
        out[: self._width] = self._kv_sum_at(ahead)
        return out

    def busiest(self, ahead: int, work: Callable[[int, int], float]) -> int:
        """`busiest_rank` during step `step + ahead` (as `kv_sum_at`)."""
        w = self._width
        kv_sums = self._kv_sum_at(ahead) if ahead > 0 else self.kv_sum[:w]
        return busiest_rank(self.num_seqs[:w], kv_sums, work)

    def _kv_sum_at(self, ahead: int) -> np.ndarray:
        """`kv_sum_at(ahead)` (ahead > 0) of the ranks below the width alone."""
        w = self._width
        out = self.kv_sum[:w]
        for part in self._spans(self.step + 1, min(ahead, self.horizon - 1)):
            out = out + _sum_rows(self._ring[part, :w])
        return out

    @staticmethod
    def _deltas(base: int, plan: Sequence[int]) -> np.ndarray:
        """Context changes of one sequence after each of its steps (the last gives everything back)."""
        num = len(plan)
        p = np.asarray(plan, np.int64)
        deltas = np.empty(num, np.int64)
        if num > 1:  # each step's new tokens (np.diff with prepend costs more than this on short plans)
            deltas[0] = p[0]
            np.subtract(p[1 : num - 1], p[: num - 2], out=deltas[1 : num - 1])
        deltas[num - 1] = -(base + (int(p[num - 2]) if num > 1 else 0))
        return deltas

    def _spans(self, first_step: int, num: int) -> list[slice]:
        """The ring rows of steps first_step .. first_step + num - 1 (num <= horizon) as at most two
        slices (a slice reads a view; a list of rows would copy)."""
        h = self.horizon
        start = first_step % h
        if start + num <= h:
            return [slice(start, start + num)]
        return [slice(start, h), slice(0, start + num - h)]

    def _add_row(self, rank: int, first_step: int, values: np.ndarray) -> None:
        """Adds `values` to `rank`'s changes of steps first_step, first_step + 1, ..."""
        done = 0
        for part in self._spans(first_step, len(values)):
            width = part.stop - part.start
            self._ring[part, rank] += values[done : done + width]
            done += width

    def _fit(self, span: int) -> None:
        """Grows the ring so changes up to `span` steps ahead have their own row."""
        old = self.horizon
        if span < old:
            return
        new = max(span, 2 * old)
        ring = np.zeros((new, self._ring.shape[1]), np.int64)
        steps = np.arange(self.step + 1, self.step + old)
        ring[steps % new] = self._ring[steps % old]
        self._ring = ring


def _sum_rows(rows: np.ndarray) -> np.ndarray:
    """Column sums of a block of ring rows (the ufunc itself: `ndarray.sum`'s Python wrapper costs
    more than the sum over a few rows)."""
    return np.add.reduce(rows, axis=0)


def busiest_rank(num_seqs: np.ndarray, kv_sums: np.ndarray, work: Callable[[int, int], float]) -> int:
    """The rank whose attention takes longest (`work(num_seqs, kv_sum)`, increasing in both), the lowest
    index among equals; -1 when no rank holds a sequence. Only the ranks not outdone on both counts by
    another are priced (usually one or two)."""
    active = np.flatnonzero(num_seqs)
    if active.size == 0:
        return -1
    if active.size <= FEW_RANKS:
        return _busiest_of(active.tolist(), num_seqs[active].tolist(), kv_sums[active].tolist(), work)
    n, k = num_seqs[active], kv_sums[active]
    order = np.lexsort((active, -k, -n))  # by sequences, then context, descending; then index
    n_sorted = n[order]
    heads = np.ones(order.size, bool)
    heads[1:] = n_sorted[1:] != n_sorted[:-1]
    cand = order[heads]  # per sequence count: the most context, lowest index
    ck = k[cand]
    keep = np.ones(cand.size, bool)
    keep[1:] = ck[1:] > np.maximum.accumulate(ck)[:-1]  # fewer sequences must bring more context
    best, best_work = -1, -1.0
    for c in cand[keep]:
        rank, w = int(active[c]), work(int(n[c]), int(k[c]))
        if w > best_work or (w == best_work and rank < best):
            best, best_work = rank, w
    return best


def _busiest_of(ranks: list[int], ns: list[int], ks: list[int], work: Callable[[int, int], float]) -> int:
    """`busiest_rank` over a few active ranks in plain Python (numpy's per-call cost dominates there):
    the same candidates, priced in the same order, with the same tie-break."""
    order = sorted(zip([-n for n in ns], [-k for k in ks], ranks, strict=True))  # ranks are distinct
    best, best_work = -1, -1.0
    last_n, top_k = -1, -1
    for neg_n, neg_k, rank in order:
        n, k = -neg_n, -neg_k
        if n == last_n:  # per sequence count only the first: the most context, lowest index
            continue
        last_n = n
        if k <= top_k:  # fewer sequences must bring more context
            continue
        top_k = k
        w = work(n, k)
        if w > best_work or (w == best_work and rank < best):
            best, best_work = rank, w
    return best
