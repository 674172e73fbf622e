"""Arrival processes. Pure: each returns send offsets in emulated seconds, first request at 0."""

from __future__ import annotations

import random


def poisson_arrivals(num_requests: int, rate_per_s: float, seed: int, burstiness: float = 1.0) -> list[float]:
    """Gamma-distributed gaps with mean 1/rate; burstiness 1.0 is Poisson, below 1 burstier, above smoother.

    Same convention as `vllm bench serve --burstiness`: shape = burstiness, scale = 1 / (rate * burstiness).
    """
    if rate_per_s <= 0:
        raise ValueError(f"request rate must be > 0, got {rate_per_s}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    rng = random.Random(seed)
    scale = 1.0 / (rate_per_s * burstiness)
    offsets: list[float] = []
    now = 0.0
    for _ in range(num_requests):
        offsets.append(now)
        now += rng.gammavariate(burstiness, scale)
    return offsets


def constant_arrivals(num_requests: int, rate_per_s: float) -> list[float]:
    """Evenly spaced sends at `rate_per_s`."""
    if rate_per_s <= 0:
        raise ValueError(f"request rate must be > 0, got {rate_per_s}")
    return [i / rate_per_s for i in range(num_requests)]


def closed_loop_arrivals(num_requests: int) -> list[float]:
    """Closed loop ignores arrival times: every request is due at once and workers pace themselves."""
    return [0.0] * num_requests


def make_arrivals(
    kind: str, num_requests: int, rate_per_s: float | None, seed: int, burstiness: float = 1.0
) -> list[float]:
    """Dispatch on `kind` ("poisson", "constant", "closed")."""
    if kind == "closed":
        return closed_loop_arrivals(num_requests)
    if rate_per_s is None:
        raise ValueError(f"arrival '{kind}' needs a request rate")
    if kind == "poisson":
        return poisson_arrivals(num_requests, rate_per_s, seed, burstiness)
    if kind == "constant":
        return constant_arrivals(num_requests, rate_per_s)
    raise ValueError(f"unknown arrival '{kind}' (poisson, constant, closed)")
