"""XL3M segment-wise inference (arXiv:2405.17755): plan, segment, keep the top K, splice. Pure.

A prompt of L tokens longer than the window C is cut into a question (its last Nq tokens) and a
context (the rest). The context is split into overlapping windows of S tokens (stride S - O); each
window + question is scored by the model (lower = more certain = more relevant); the K lowest scores
are kept in a bounded heap while scores stream in, in any order; the kept windows are merged where
they overlap and spliced in their original order, followed by the question. That splice is the
prompt of the normal inference.

Memory: `TopK` never holds more than K segments' tokens, whatever L is; `windows` yields one
(start, end) at a time and never needs the whole context.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


class PlanError(ValueError):
    """The knobs cannot fit the window; `field` names the setting at fault."""

    def __init__(self, field_name: str, rule: str) -> None:
        super().__init__(f"{field_name}: {rule}")
        self.field = field_name
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Plan:
    """How one over-long prompt is processed (all counts in tokens)."""

    num_prompt: int  # L
    num_question: int  # Nq
    segment: int  # S
    overlap: int  # O
    kept: int  # K

    @property
    def num_context(self) -> int:
        return self.num_prompt - self.num_question

    @property
    def stride(self) -> int:
        return self.segment - self.overlap

    @property
    def num_segments(self) -> int:
        """m = ceil((L - Nq - O) / (S - O)), at least 1."""
        return num_windows(self.num_context, self.segment, self.overlap)

    @property
    def num_scoring_tokens(self) -> int:
        """Tokens the scoring jobs compute in all: every window plus a question each."""
        return sum(e - s for s, e in windows(self.num_context, self.segment, self.overlap)) + (
            self.num_segments * self.num_question
        )


def make_plan(
    num_prompt: int,
    window: int,
    max_tokens: int,
    *,
    question_tokens: int,
    segment_tokens: int = 0,
    overlap_tokens: int = -1,
    kept_segments: int = 1,
) -> Plan:
    """The plan for a prompt of `num_prompt` tokens and a window of `window` (prompt + output).

    segment_tokens 0 = (window - Nq - max_tokens) // K, so K segments and the question fill the room
    left for the prompt; overlap_tokens -1 = S // 8. Raises PlanError naming the knob when the kept
    segments and the question could not fit the window.
    """
    room = window - max_tokens  # prompt tokens the final request may have
    nq = min(question_tokens, max(1, num_prompt - 1))
    if room <= nq:
        raise PlanError("max_tokens", f"leaves {room} prompt tokens, not more than the {nq}-token question")
    seg = segment_tokens or (room - nq) // kept_segments
    if seg < 1:
        raise PlanError("kept_segments", f"{kept_segments} segments do not fit {room - nq} tokens")
    if kept_segments * seg + nq > room:
        raise PlanError(
            "segment_tokens",
            f"{kept_segments} x {seg} + {nq} question tokens exceed the {room} prompt tokens "
            "the window allows",
        )
    ovl = seg // 8 if overlap_tokens < 0 else overlap_tokens
    if ovl >= seg:
        raise PlanError("overlap_tokens", f"{ovl} must be smaller than the segment ({seg} tokens)")
    return Plan(num_prompt, nq, seg, ovl, kept_segments)


def num_windows(num_context: int, segment: int, overlap: int) -> int:
    if num_context <= segment:
        return 1
    stride = segment - overlap
    return 1 + -(-(num_context - segment) // stride)


def windows(num_context: int, segment: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each window over [0, num_context): stride S - O, the last one ends at the end.

    Every context token is in at least one window; neighbours share at least O tokens (the last
    window may share more: it is shifted left to stay S long rather than be short).
    """
    if num_context <= segment:
        yield 0, num_context
        return
    stride = segment - overlap
    for i in range(num_windows(num_context, segment, overlap)):
        start = min(i * stride, num_context - segment)
        yield start, start + segment


@dataclass(order=True, slots=True)
class _Entry:
    # heapq is a min-heap; the root must be the worst kept entry: highest score, then the least
    # preferred position (see `prefer_later`).
    neg_score: float
    rank: int
    index: int = field(compare=False)
    start: int = field(compare=False)
    end: int = field(compare=False)
    tokens: Sequence[int] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Kept:
    index: int  # window number (chronological)
    start: int  # first context token (offset in the prompt)
    end: int  # one past the last
    score: float
    tokens: Sequence[int]


class TopK:
    """The K lowest-scoring segments of a stream whose scores arrive in any order.

    Holds at most K entries (and their tokens). Ties go to the later segment when `prefer_later`
    (closer to the question, as the token model prefers the latest match), else to the earlier.
    """

    def __init__(self, k: int, *, prefer_later: bool = True) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.prefer_later = prefer_later
        self._heap: list[_Entry] = []
        self.num_seen = 0

    def push(self, index: int, start: int, end: int, score: float, tokens: Sequence[int]) -> bool:
        """Offers one scored segment; True when it is kept (for now)."""
        if len(tokens) != end - start:
            raise ValueError(f"segment {index}: {len(tokens)} tokens for [{start}, {end})")
        self.num_seen += 1
        # Larger rank = better among equal scores; the root (smallest) is evicted first.
        entry = _Entry(-score, index if self.prefer_later else -index, index, start, end, tokens)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
            return True
        if entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)
            return True
        return False

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def num_tokens_held(self) -> int:
        return sum(len(e.tokens) for e in self._heap)

    def kept(self) -> list[Kept]:
        """The kept segments in chronological order."""
        out = [Kept(e.index, e.start, e.end, -e.neg_score, e.tokens) for e in self._heap]
        return sorted(out, key=lambda k: k.start)


def merge(kept: Sequence[Kept]) -> list[tuple[int, int, list[int]]]:
    """Chronological (start, end, tokens) runs with overlapping or touching windows merged, so no
    prompt token appears twice."""
    runs: list[tuple[int, int, list[int]]] = []
    for k in sorted(kept, key=lambda k: k.start):
        if runs and k.start <= runs[-1][1]:
            start, end, toks = runs[-1]
            if k.end > end:
                toks.extend(k.tokens[end - k.start :])
                runs[-1] = (start, k.end, toks)
            continue
        runs.append((k.start, k.end, list(k.tokens)))
    return runs


def splice(kept: Sequence[Kept], question: Sequence[int]) -> list[int]:
    """The key context: merged kept windows in their original order, then the question."""
    out: list[int] = []
    for _, _, toks in merge(kept):
        out.extend(toks)
    out.extend(question)
    return out


def truncate(prompt: Sequence[int], room: int) -> list[int]:
    """The `truncate` policy: the last `room` tokens."""
    if room < 1:
        raise PlanError("max_tokens", "leaves no room for the prompt in the window")
    return list(prompt[-room:])
