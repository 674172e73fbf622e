"""Fidelity's prefill scenarios on the live stack: a burst of prompts queued at once, as the model takes it.

The model's answer (`fidelity_model.ideal_prefill`) is a queueing formula: every prompt of the burst is
waiting when the prefill instance starts, the scheduler cuts the queue into token-budgeted batches, and
each prompt's first token comes at the end of its batch. A burst sent from this host does not arrive at
once: each request costs 12-19 ms of host CPU across the services (RPCs, hashing, pool look-ups), so
192 requests reach the worker over about a second of wall time. An idle worker starts on whatever has
arrived, so the live stack formed other batches than the model's (a first batch of a few prompts, then
the rest; at 90% reuse, where the whole burst is one 1.5 s batch in the model, several small ones),
and the measured TTFT and throughput described the host's arrival spread, not the emulated instance.

So the burst is sent while the instance is busy with a **gate**: one long prompt sent first, alone, so
that its batch holds nothing else, sized to last 4 wall seconds at the run's time scale (at 1.0 it is
131,072 tokens, about 7.5 emulated s on the paper's 16-NPU instance).
The burst's requests are looked up, have their cached prefixes loaded and queue behind it; when the
gate's batch ends the whole burst is waiting, and the instance cuts it into the model's batches. The
burst is timed from the gate's end:

- gate end (emulated) = the instant the gate was sent + its queueing, cache-load and compute time as
  the router reports them (the gate's own inbound host path, a few ms, is left in the burst's time);
- TTFT of a prompt = the instant its answer reached the client - gate end (the answers' host path
  back, the pool writes of new blocks included, is in it);
- prefill tokens/s per NPU = the burst's prompt tokens / (last answer - gate end) / NPUs.

The model starts the same burst with its cached prefixes already loaded (they were loaded while it
queued). The run checks that it measured what it meant to: the worker must have run the gate alone
and then exactly the model's number of batches; if the host could not queue the burst within the
gate at this time scale, or if carrying the answers back took 2% or more of the burst's time (its
idle share: the model has no such path), the scenario counts as not keeping up and a slower scale is
tried, like a step loop that lags.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from benchmarks.fidelity_host import IDLE_LIMIT_PCT, HostUse, host_use, stack_cpu
from benchmarks.fidelity_model import BLOCK, ideal_prefill, num_batches, unique_prompt
from benchmarks.fidelity_report import Row
from benchmarks.fidelity_stack import delta, scrape, start
from supernode.hw import cost as hw_cost
from supernode.hw.specs import PrefillDeployment
from supernode.runtime.clock import ScaledClock
from supernode.runtime.config import Settings
from supernode.runtime.deployments import prefill_deployment
from supernode.sdk import AsyncClient
from supernode.sdk.client import Completion

PROMPT_TOKENS = 4096
GATE_WALL_S = 4.0  # wall s the gate gives the host to queue the burst (it needs ~1 s for 192 prompts)
GATE_MAX_TOKENS = 131_072  # ~7.5 emulated s of prefill on the paper's instance


async def wait_for_lookup(port: int, num_tokens: float, timeout_s: float = 30.0) -> None:
    """Until the prefill worker has looked up `num_tokens` prompt tokens in all (a prompt so looked up
    is queued at once, and an idle worker starts it)."""
    deadline = time.monotonic() + timeout_s
    while (await scrape(port)).get("supernode_prefill_cache_query_tokens_total", 0.0) < num_tokens:
        if time.monotonic() > deadline:
            raise RuntimeError("the gate prompt never reached the prefill worker")
        await asyncio.sleep(0.02)


async def prefill_scenario(
    name: str, reuse: float, scale: float, num_batches_sent: int = 3
) -> tuple[list[Row], HostUse]:
    """Rows (prefill tokens/s per NPU, mean TTFT) for a burst of `num_batches_sent` budgets' worth of
    4,096-token prompts, `reuse` of each a cached shared prefix."""
    stack, ports = await start({"SUPERNODE_RUNTIME__TIME_SCALE": str(scale)}, num_prefill=1)
    settings = Settings()
    budget = settings.prefill.tokens_per_npu * settings.prefill.num_npus
    cached_len = int(PROMPT_TOKENS * reuse) // BLOCK * BLOCK
    prefix = unique_prompt(10**6, cached_len) if cached_len else []
    clock = ScaledClock(scale)
    dep = prefill_deployment(settings.prefill)
    gate_len = gate_tokens(dep, scale)
    try:
        async with AsyncClient(stack.router_address, timeout_s=600) as client:

            async def answer(i: int, length: int, shared: list[int]) -> tuple[float, Completion]:
                result = await client.complete(token_ids=unique_prompt(i, length, shared), max_tokens=1)
                return clock.now(), result

            if prefix:  # fill the context cache with the shared prefix
                await client.complete(token_ids=unique_prompt(-1, PROMPT_TOKENS, prefix), max_tokens=1)
            before, cpu0, w0 = await scrape(ports["prefill"]), stack_cpu(stack), time.monotonic()
            gate_sent = clock.now()
            gate = asyncio.create_task(answer(-2, gate_len, []))
            looked_up = before.get("supernode_prefill_cache_query_tokens_total", 0.0)
            await wait_for_lookup(ports["prefill"], looked_up + gate_len)
            n = budget // PROMPT_TOKENS * num_batches_sent
            done = await asyncio.gather(*(answer(i, PROMPT_TOKENS, prefix) for i in range(n)))
            _, gate_result = await gate
            after, cpu1, w1 = await scrape(ports["prefill"]), stack_cpu(stack), time.monotonic()
    finally:
        stack.stop()
    g = gate_result.stats
    gate_end = gate_sent + g.cache_load_s + g.prefill_queue_s + g.prefill_compute_s
    stats = [r.stats for _, r in done]
    shape = [(s.num_prompt_tokens - s.num_cached_tokens, s.num_cached_tokens) for s in stats]
    model_s, model_ttft_s = ideal_prefill(dep, shape, budget)
    span_s = max(t for t, _ in done) - gate_end
    total_tokens = sum(s.num_prompt_tokens for s in stats)
    rows = [
        Row(name, "prefill_tokens_per_s_per_npu", total_tokens / span_s / dep.num_npus,
            total_tokens / model_s / dep.num_npus),
        Row(name, "mean_ttft_ms", statistics.fmean(t - gate_end for t, _ in done) * 1e3, model_ttft_s * 1e3),
    ]  # fmt: skip
    use = host_use(before, after, cpu0, cpu1, "prefill", w1 - w0, scale, len(done))
    # The burst's window: from the gate's end to the last answer, the gate's own batch left out.
    busy = delta(before, after, "supernode_prefill_step_seconds_sum") - g.prefill_compute_s
    use.idle_pct = 100.0 * max(0.0, span_s - busy) / span_s
    steps = round(delta(before, after, "supernode_prefill_step_seconds_count"))
    want = 1 + num_batches(dep, shape, budget)
    cached_pct = 100.0 * statistics.fmean(s.num_cached_tokens for s in stats) / PROMPT_TOKENS
    use.shape = (
        f"{n} prompts behind the gate, {steps - 1} batches (model {want - 1}), "
        f"cached {cached_pct:.1f}% of each prompt (asked {100 * reuse:.0f}%, whole blocks)"
    )
    if steps != want:
        use.problem = f"the burst was not all queued behind the gate ({steps - 1} batches, model {want - 1})"
    elif use.idle_pct >= IDLE_LIMIT_PCT:
        use.problem = f"the host carried the answers back over {use.idle_pct:.1f}% of the burst's time"
    return rows, use


def gate_tokens(dep: PrefillDeployment, scale: float) -> int:
    """The gate prompt's length: the shortest (4K doubling up to 128K) whose batch lasts
    `GATE_WALL_S` wall seconds at `scale`, the time the host gets to queue the burst behind it."""
    length = PROMPT_TOKENS
    while (
        length < GATE_MAX_TOKENS
        and hw_cost.prefill_batch_cost(dep, [length], [0]).total_us / 1e6 < GATE_WALL_S * scale
    ):
        length *= 2
    return length
