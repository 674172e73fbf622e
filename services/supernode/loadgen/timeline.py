"""Time series over a run, reconstructed from request results. Pure.

Times are emulated seconds after the run's start (wall offsets x time_scale). Output tokens of a request
are spread evenly between its first token and its end; "decode batch" counts requests between their first
token and their end, as the client sees them; "in flight" counts requests between send and end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from supernode.loadgen.records import RequestResult


@dataclass(frozen=True, slots=True)
class Timeline:
    t_s: list[float]  # bin centres, emulated seconds
    output_tokens_per_s: list[float]  # tokens per emulated second in each bin
    decode_batch: list[float]  # time-averaged requests in decode in each bin
    in_flight: list[float]  # time-averaged requests sent and not finished in each bin


def _occupancy(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-averaged number of [start, end) intervals open in each bin."""
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    overlap = np.clip(np.minimum(ends[:, None], hi) - np.maximum(starts[:, None], lo), 0.0, None)
    return overlap.sum(axis=0) / (hi - lo)[0]


def _tokens(first: np.ndarray, ends: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Tokens emitted in each bin: the first token at `first`, the rest evenly over (first, end]."""
    span = np.maximum(ends - first, 1e-12)[:, None]
    frac = np.clip((edges[None, :] - first[:, None]) / span, 0.0, 1.0)
    cumulative = (counts - 1)[:, None] * frac + (edges[None, :] >= first[:, None])
    return np.diff(cumulative, axis=1).sum(axis=0)


def build_timeline(results: Sequence[RequestResult], time_scale: float, num_bins: int = 120) -> Timeline:
    """Bin the run into `num_bins` equal bins from 0 to the last request's end."""
    done = [r for r in results if r.is_ok and r.first_token_s > 0]
    end = max((r.done_s for r in results), default=0.0) * time_scale
    if not results or end <= 0:
        return Timeline([], [], [], [])
    edges = np.linspace(0.0, end, num_bins + 1)
    width = edges[1] - edges[0]
    sent = np.array([r.sent_s for r in results]) * time_scale
    finished = np.array([r.done_s for r in results]) * time_scale
    first = np.array([r.first_token_s for r in done]) * time_scale
    ends = np.array([r.done_s for r in done]) * time_scale
    counts = np.array([r.num_output_tokens for r in done], dtype=float)
    zeros = np.zeros(num_bins)
    tokens = _tokens(first, ends, counts, edges) if done else zeros
    return Timeline(
        t_s=((edges[:-1] + edges[1:]) / 2).tolist(),
        output_tokens_per_s=(tokens / width).tolist(),
        decode_batch=(_occupancy(first, ends, edges) if done else zeros).tolist(),
        in_flight=_occupancy(sent, finished, edges).tolist(),
    )


def mean_decode_batch(results: Sequence[RequestResult]) -> float:
    """Time-averaged requests in decode over the span when at least one was (Little's law, wall-free)."""
    spans = sorted((r.first_token_s, r.done_s) for r in results if r.is_ok and r.first_token_s > 0)
    busy = 0.0
    cur_start, cur_end = None, 0.0
    for start, end in spans:
        if cur_start is None or start > cur_end:
            busy += cur_end - cur_start if cur_start is not None else 0.0
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_start is not None:
        busy += cur_end - cur_start
    total = sum(end - start for start, end in spans)
    return total / busy if busy > 0 else 0.0
