"""What `supernode model` answers for the fidelity scenarios, and the prompts they send.

Shared by the live harness (benchmarks/fidelity.py) and the virtual-time one (fidelity_virtual.py), so
both compare against the same answer for the same prompts.
"""

from __future__ import annotations

import statistics

from supernode.core.request import Request
from supernode.core.scheduler import PrefillScheduler
from supernode.hw import comm
from supernode.hw import cost as hw_cost
from supernode.hw.specs import KV_BYTES_PER_TOKEN, PrefillDeployment

BLOCK = 128  # KV block (tokens): cached prefixes are whole blocks


def unique_prompt(i: int, length: int, prefix: list[int] | None = None) -> list[int]:
    """`prefix` followed by tokens no other `i` shares (so only the prefix can hit the cache)."""
    prefix = prefix or []
    own = [257 + ((i * 7919 + k * 104729) % 120_000) for k in range(length - len(prefix))]
    return prefix + own


def shared_prefix_load_s(dep: PrefillDeployment, num_prompts: int, cached_len: int, block: int) -> float:
    """The model's time (s) to load `num_prompts` prompts' shared cached prefix of `cached_len` tokens
    from the EMS pool, all started at once: each prompt's prefix lands on one die (spread evenly), and
    each block's CPU socket sends its block once per prompt."""
    if cached_len <= 0:
        return 0.0
    per_die = -(-num_prompts // dep.num_dies) * cached_len * KV_BYTES_PER_TOKEN
    per_block = block * KV_BYTES_PER_TOKEN
    return comm.cache_loads_us(dep.hardware, per_die, num_prompts * per_block, per_block) / 1e6


def ideal_prefill(
    dep: PrefillDeployment, shape: list[tuple[int, int]], budget: int, ready_s: float = 0.0
) -> tuple[float, float]:
    """The model's answer for the same prompts arriving at once, their cached prefixes loaded by
    `ready_s`: the prefill scheduler forms its batches, the cost model prices each (attention over the
    cached context and the TP stage's gather of its latents included); returns (total emulated s, mean
    time to first token)."""
    scheduler = PrefillScheduler(budget, max_queue=len(shape))
    for i, (new, cached) in enumerate(shape):
        scheduler.add(Request(str(i), [0] * (new + cached), 1, num_cached_tokens=cached))
    now, finished = ready_s, []
    while (batch := scheduler.schedule()) is not None:
        now += (
            hw_cost.prefill_batch_cost(
                dep,
                [s.num_new for s in batch.slices],
                [s.num_context for s in batch.slices],
            ).total_us
            / 1e6
        )
        finished += [now] * len(scheduler.postprocess(batch))
    return now, statistics.fmean(finished)


def num_batches(dep: PrefillDeployment, shape: list[tuple[int, int]], budget: int) -> int:
    """Batches the prefill scheduler forms for `shape` arriving at once."""
    scheduler = PrefillScheduler(budget, max_queue=len(shape))
    for i, (new, cached) in enumerate(shape):
        scheduler.add(Request(str(i), [0] * (new + cached), 1, num_cached_tokens=cached))
    count = 0
    while (batch := scheduler.schedule()) is not None:
        scheduler.postprocess(batch)
        count += 1
    return count
