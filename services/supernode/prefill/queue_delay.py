"""The prefill queue's delay bound: a prompt that would wait longer than `prefill.max_queue_delay_s` for
its batch is refused at once (RESOURCE_EXHAUSTED with a retry hint; the router then tries the other
prefill instances), instead of joining a queue it would sit in for longer than a client waits.

The wait is estimated as the prompt tokens queued ahead (those of the running batch included) over
the instance's prefill throughput: tokens per emulated second of the batches it ran lately (an
EWMA), and before its first batch the cost model's price of a full token budget of 4K-token prompts.
The bound is in wall seconds (like every other wait setting) and compared in emulated time.

Counted in `supernode_shed_total{where="prefill",reason="queue_delay"}` (the process's default
registry) with a rate-limited WARNING line; the current estimate is the worker gauge
`supernode_prefill_queue_delay_seconds`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from supernode.hw import cost as hw_cost
from supernode.hw.specs import PrefillDeployment
from supernode.runtime.admission import ShedLog
from supernode.runtime.errors import ResourceExhaustedError
from supernode.runtime.guard import SHED_TOTAL

_EWMA_WEIGHT = 0.3  # weight of the newest batch in the throughput estimate
_SEED_PROMPT_TOKENS = 4096  # prompt size of the full batch that seeds the estimate


class QueueDelayBound:
    def __init__(
        self, dep: PrefillDeployment, token_budget: int, max_delay_s: float, time_scale: float,
        registry: CollectorRegistry, worker_id: str,
    ) -> None:  # fmt: skip
        """`max_delay_s`: emulated seconds (0 = no bound); `time_scale` turns the retry hint to wall."""
        self.max_delay_s = max_delay_s
        self.time_scale = time_scale
        n = max(1, token_budget // _SEED_PROMPT_TOKENS)
        size = min(token_budget, _SEED_PROMPT_TOKENS)
        seed_s = hw_cost.prefill_batch_cost(dep, [size] * n, [0] * n).total_us / 1e6
        self.tokens_per_s = n * size / seed_s
        self.num_refused = 0
        self._log = ShedLog("prefill")
        self._gauge = Gauge(
            "supernode_prefill_queue_delay_seconds",
            "Estimated wait of a prompt arriving now for its batch (emulated)", ("worker",),
            registry=registry,
        ).labels(worker_id)  # fmt: skip
        self._gauge.set(0)

    def on_batch(self, num_tokens: int, duration_s: float) -> None:
        """A batch of `num_tokens` new tokens took `duration_s` emulated seconds."""
        if num_tokens > 0 and duration_s > 0:
            rate = num_tokens / duration_s
            self.tokens_per_s += _EWMA_WEIGHT * (rate - self.tokens_per_s)

    def estimate_s(self, num_tokens_ahead: int) -> float:
        """Emulated seconds until a prompt arriving behind `num_tokens_ahead` queued tokens starts."""
        return num_tokens_ahead / self.tokens_per_s

    def on_queue(self, num_tokens_ahead: int) -> None:
        self._gauge.set(self.estimate_s(num_tokens_ahead))

    def admit(self, num_tokens_ahead: int) -> None:
        """Raises RESOURCE_EXHAUSTED when the estimated wait exceeds the bound."""
        if self.max_delay_s <= 0:
            return
        wait_s = self.estimate_s(num_tokens_ahead)
        if wait_s <= self.max_delay_s:
            return
        self.num_refused += 1
        SHED_TOTAL.labels("prefill", "queue_delay").inc()
        message = (
            f"overloaded: prefill queue's estimated wait {wait_s:.2f}s exceeds the "
            f"{self.max_delay_s:g}s queueing bound"
        )
        self._log.on_shed("queue_delay", message)
        retry_after_s = max(0.5, round((wait_s - self.max_delay_s) / self.time_scale, 1))
        hint = f"{message}; retry after {retry_after_s:g}s"
        raise ResourceExhaustedError(hint, retry_after_s=retry_after_s)
