"""Prometheus metrics of the router's long-context policy (on the router's metrics port), and `Outcome`,
the record of what the policy did to one prompt that they count.

Names: requests by policy applied, XL3M segments scored, scoring tokens, the scoring part of TTFT,
and scoring batch seconds (the scoring share of prefill time is scoring_compute / (scoring_compute +
the serving metrics' prefill compute)).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# Scoring of a 1M-token prompt takes seconds to minutes of emulated time.
SCORING_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


@dataclass(slots=True)
class Outcome:
    """What the policy did to one prompt (policy "" = it fit)."""

    policy: str
    prompt: list[int]
    num_prompt: int
    num_segments: int = 0
    num_kept: int = 0
    num_scoring_tokens: int = 0
    scoring_compute_s: float = 0.0
    scoring_s: float = 0.0


class LongContextMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "supernode_router_long_context_requests",
            "Requests whose prompt exceeded the window, by the policy applied",
            ("policy",),
            registry=r,
        )
        self.segments = Counter("supernode_router_xl3m_segments_scored", "XL3M segments scored", registry=r)
        self.tokens = Counter(
            "supernode_router_xl3m_scoring_tokens",
            "Tokens of XL3M scoring jobs (segments + questions)",
            registry=r,
        )
        self.compute_s = Counter(
            "supernode_router_xl3m_scoring_compute_seconds",
            "Emulated prefill batch seconds of XL3M scoring jobs",
            registry=r,
        )
        self.scoring_s = Histogram(
            "supernode_router_xl3m_scoring_seconds",
            "Emulated seconds from arrival to the spliced prompt (TTFT's scoring part)",
            buckets=SCORING_BUCKETS,
            registry=r,
        )
        self.final_ttft_s = Histogram(
            "supernode_router_xl3m_final_ttft_seconds",
            "Emulated seconds from the spliced prompt to the first token (TTFT's final part)",
            buckets=SCORING_BUCKETS,
            registry=r,
        )
        for policy in ("truncate", "xl3m"):
            self.requests.labels(policy)

    def on_outcome(self, outcome: Outcome) -> None:
        if not outcome.policy:
            return
        self.requests.labels(outcome.policy).inc()
        if outcome.policy == "xl3m":
            self.segments.inc(outcome.num_segments)
            self.tokens.inc(outcome.num_scoring_tokens)
            self.compute_s.inc(outcome.scoring_compute_s)
            self.scoring_s.observe(outcome.scoring_s)

    def on_finish(self, outcome: Outcome, ttft_s: float) -> None:
        """`ttft_s`: the request's whole TTFT (scoring included)."""
        if outcome.policy == "xl3m":
            self.final_ttft_s.observe(max(0.0, ttft_s - outcome.scoring_s))
