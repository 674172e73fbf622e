"""Workloads: lists of `RequestSpec`. Pure (seeded, no I/O).

- `synthetic`: independent prompts with lengths from `LengthDist`s.
- `sessions`: multi-turn conversations. Each request's first `reuse_ratio` of prompt tokens repeats an
  earlier request's: turn 1 starts with a system prompt shared by every session, turn k starts with the
  previous turn's prompt followed by the (client-synthesized) previous answer, then fresh user tokens.
  A turn is sent only after the previous turn of its session finished, so the pool can have its blocks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from supernode.loadgen.lengths import LengthDist
from supernode.loadgen.records import RequestSpec, compact
from supernode.loadgen.tokens import (
    TAG_ASSISTANT,
    TAG_FRESH,
    TAG_SYSTEM,
    chained_token_array,
    random_token_array,
)

Tokens = npt.NDArray[np.int32]


def request_id(label: str, index: int) -> str:
    return f"lg-{label}-{index:06d}"


def synthetic(
    arrivals: Sequence[float], input_len: LengthDist, output_len: LengthDist, seed: int, label: str = "run"
) -> list[RequestSpec]:
    """One independent request per arrival offset."""
    rng = random.Random(seed)
    specs: list[RequestSpec] = []
    for i, arrival in enumerate(arrivals):
        prompt = random_token_array([seed, TAG_FRESH, i], input_len.sample(rng))
        specs.append(
            RequestSpec(request_id(label, i), compact(prompt), output_len.sample(rng), arrival, seed + i)
        )
    return specs


def _session_order(num_requests: int, turns: int, sessions_in_flight: int) -> list[tuple[int, int]]:
    """(session, turn) pairs: groups of `sessions_in_flight` sessions, turn-major inside a group."""
    order: list[tuple[int, int]] = []
    group = 0
    while len(order) < num_requests:
        first = group * sessions_in_flight
        for turn in range(turns):
            for session in range(first, first + sessions_in_flight):
                order.append((session, turn))
        group += 1
    return order[:num_requests]


def sessions(
    arrivals: Sequence[float],
    input_len: LengthDist,
    output_len: LengthDist,
    reuse_ratio: float,
    seed: int,
    turns_per_session: int = 4,
    sessions_in_flight: int = 8,
    label: str = "run",
) -> list[RequestSpec]:
    """Multi-turn conversations whose prompts share `reuse_ratio` of their tokens with an earlier request."""
    if not 0.0 <= reuse_ratio < 1.0:
        raise ValueError(f"reuse ratio must be in [0, 1), got {reuse_ratio}")
    if turns_per_session < 1 or sessions_in_flight < 1:
        raise ValueError("turns per session and sessions in flight must be >= 1")
    rng = random.Random(seed)
    # Prompts are built as 32-bit arrays (the same ids as lists, a fraction of the work and memory).
    history: dict[int, tuple[Tokens, str]] = {}  # session -> (prompt + answer so far, last request id)
    specs: list[RequestSpec] = []
    system: Tokens = random_token_array([], 0)  # the shared system prompt, as long as any turn 1 needed
    order = _session_order(len(arrivals), turns_per_session, sessions_in_flight)
    for i, (arrival, (session, turn)) in enumerate(zip(arrivals, order, strict=True)):
        length, max_tokens = input_len.sample(rng), output_len.sample(rng)
        wanted = round(reuse_ratio * length)
        if turn == 0 or session not in history:
            if wanted > len(system):  # every prefix of the chain is the same, so one grows and is cut
                system = chained_token_array([seed, TAG_SYSTEM], wanted)
            shared, after = system[:wanted], ""
        else:
            past, after = history[session]
            shared = past[:wanted]
        prompt = np.concatenate([shared, random_token_array([seed, TAG_FRESH, i], length - len(shared))])
        rid = request_id(label, i)
        if turn + 1 < turns_per_session:
            answer = random_token_array([seed, TAG_ASSISTANT, i], max_tokens)
            history[session] = (np.concatenate([prompt, answer]), rid)
        else:  # its last turn: nothing repeats it (keeps memory flat over long workloads)
            history.pop(session, None)
        specs.append(
            RequestSpec(
                rid, compact(prompt), max_tokens, arrival, seed + i, f"s{session}", after, len(shared)
            )
        )
    return specs
