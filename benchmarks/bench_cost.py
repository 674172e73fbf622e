"""Cost-model speed: microseconds to price one decode step and one prefill batch.

The decode step loop prices a step every step, so `cost_decode_step_us` must stay under 100 us even with
the per-step mode and AIC-split search. Setup: the paper's decode instance, 48 sequences per die with KV
lengths that change every call (so only shape-dependent work is cached); the paper's prefill batch (64
prompts of 4,096 tokens), priced afresh each time (`cost_prefill_batch_us`: the whole-batch cache is
emptied first, the chain pieces' caches kept), and `cost_prefill_batch_cached_us` for the same shape
again (a cache hit, as two in three batches of the mixed workload are). Each call is timed in process
CPU time (`time.process_time_ns`), not wall time, so that other processes on a shared host do not
count; the figure is the median per call.
"""

from __future__ import annotations

import statistics
import time

from supernode.hw.cost import decode_step_cost, prefill_batch_cost
from supernode.hw.prefill import forget_batch_costs
from supernode.hw.specs import paper_decode, paper_prefill

NUM_CALLS = 2_000


def _median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1e3


def run() -> dict[str, float]:
    """Median CPU time per call (us) of the two cost functions."""
    dec, pre = paper_decode(), paper_prefill()
    base = list(range(4000, 4048))
    decode_step_cost(dec, 48, base)
    decode_samples = []
    for i in range(NUM_CALLS):
        kv = [k + i for k in base]
        start = time.process_time_ns()
        decode_step_cost(dec, 48, kv)
        decode_samples.append(time.process_time_ns() - start)
    prefill_samples, cached_samples = [], []
    for i in range(NUM_CALLS // 10):
        new = [4096 - (i % 7)] * 64
        forget_batch_costs()  # priced, not looked up (a batch of a shape seen before is a cache hit)
        start = time.process_time_ns()
        prefill_batch_cost(pre, new, [0] * 64)
        prefill_samples.append(time.process_time_ns() - start)
        start = time.process_time_ns()
        prefill_batch_cost(pre, new, [0] * 64)  # the same shape again
        cached_samples.append(time.process_time_ns() - start)
    return {
        "cost_decode_step_us": _median_us(decode_samples),
        "cost_prefill_batch_us": _median_us(prefill_samples),
        "cost_prefill_batch_cached_us": _median_us(cached_samples),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
