"""Fidelity's decode scenarios on the live stack: the batch held full, measured in steady state.

The model's point is one step at `batch_per_die` sequences per die, each at the mean context of a
sequence halfway through its output (prompt + max_tokens / 2), and MTP's expected tokens per step.
What the live run must do to measure that point, and how it checks it did:

- **The batch stays full.** A closed loop keeps twice the batch in flight, so a full batch's worth of
  prefilled requests waits at the decode instance: when a sequence finishes, one waiting on its die
  takes the slot at the next step (a waiting request is tied to the die its KV was reserved on, so
  with a shallower queue a die can find none of its own waiting and run a step short; with half a
  batch in reserve the virtual-time run averaged 47.4 of 48 per die, with a full batch 48.0).
- **Steady state only.** The window opens once every die holds the batch and lasts a fixed emulated
  time (several request lifetimes); TPOT is the median over the requests whose decode (first decode
  chunk to last) lies inside the window. Requests that ran while the batch was still filling, or
  after the loop stopped feeding it (the batch draining, its steps ever faster), are not counted;
  neither is a request's wait for a batch slot (the router's per-request TPOT counts that).
- **What the stack ran** is read from the decode worker's counters over the window: steps, their
  emulated seconds, sequence-steps (`vllm:spec_decode_num_drafts`, one per sequence per step) and
  tokens, giving the realised batch per die, mean step time and tokens per sequence-step. They are
  reported with the host figures, so a run whose batch was not full says so.

Throughput is the tokens the worker emitted over the window's emulated seconds, per NPU.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from benchmarks.fidelity_host import HostUse, host_use, stack_cpu
from benchmarks.fidelity_model import unique_prompt
from benchmarks.fidelity_report import Row
from benchmarks.fidelity_stack import delta, scrape, start
from supernode.hw import cost as hw_cost
from supernode.runtime.config import Settings
from supernode.runtime.deployments import decode_deployment
from supernode.runtime.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from supernode.sdk import AsyncClient

NUM_DIES = 2  # one NPU's worth of ranks
FULL = 0.99  # a realised mean batch under this share of the chosen one: the host did not keep it full


async def wait_for_batch(port: int, batch_per_die: int, timeout_s: float) -> bool:
    """True once the decode batch holds `batch_per_die` per die; False if it never did in time (a host
    too slow to prefill the first wave at this time scale)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await scrape(port)).get("supernode_decode_batch_per_die", 0) >= batch_per_die:
            return True
        await asyncio.sleep(0.2)
    return False


def in_batch_tpot(arrivals: list[tuple[float, int]], scale: float) -> tuple[float, float, float]:
    """(wall start, wall end, emulated s per token) of one request's decode: from its first decode
    chunk (arrivals[1]; arrivals[0] is the prefill's token) to its last, per token after the first."""
    (begin, _), (end, _) = arrivals[1], arrivals[-1]
    return begin, end, (end - begin) * scale / sum(n for _, n in arrivals[2:])


async def decode_scenario(
    name: str, batch_per_die: int, kv_len: int, max_tokens: int, scale: float, window_s: float
) -> tuple[list[Row], HostUse]:
    """Rows (TPOT, decode tokens/s per NPU) over `window_s` emulated seconds of steady state."""
    env = {
        "SUPERNODE_RUNTIME__TIME_SCALE": str(scale),
        "SUPERNODE_DECODE__NUM_DIES": str(NUM_DIES),
        "SUPERNODE_DECODE__MAX_BATCH_PER_DIE": str(batch_per_die),
    }
    stack, ports = await start(env, num_prefill=2)
    target = batch_per_die * NUM_DIES
    concurrency = 2 * target  # a full batch waits behind the running one
    tpots: list[tuple[float, float, float]] = []  # (wall start, wall end, tpot_s)
    refused: list[str] = []  # requests the stack turned away (retried)
    try:
        async with AsyncClient(stack.router_address, timeout_s=600) as client:

            async def loop(worker: int) -> None:
                i = worker
                while True:
                    arrivals: list[tuple[float, int]] = []
                    try:
                        async for chunk in client.generate(
                            token_ids=unique_prompt(i, kv_len), max_tokens=max_tokens, seed=i
                        ):
                            if chunk.token_ids:
                                arrivals.append((time.monotonic(), len(chunk.token_ids)))
                    except (UnavailableError, ResourceExhaustedError, DeadlineExceededError) as err:
                        refused.append(err.code)  # a busy host: try again
                        await asyncio.sleep(err.retry_after_s or 0.5)
                        continue
                    tpots.append(in_batch_tpot(arrivals, scale))
                    i += concurrency

            tasks = [asyncio.create_task(loop(w)) for w in range(concurrency)]
            try:
                # Warming up is not measured: a busy host may take a while to prefill the first wave.
                if not await wait_for_batch(ports["decode"], batch_per_die, timeout_s=120.0):
                    return [], HostUse(problem="the host never filled the batch within 120 s")
                before, cpu0, t0 = await scrape(ports["decode"]), stack_cpu(stack), time.monotonic()
                await asyncio.sleep(window_s / scale)
                after, cpu1, t1 = await scrape(ports["decode"]), stack_cpu(stack), time.monotonic()
            finally:  # the window is measured: stop the loop rather than wait for the batch to drain
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stack.stop()
    if refused:
        print(f"fidelity: {name}: {len(refused)} requests turned away and retried ({set(refused)})")
    steady = [tp for begin, end, tp in tpots if begin >= t0 and end <= t1]
    if not steady:
        raise RuntimeError(f"{name}: no request decoded entirely inside the {window_s} s window")
    dep = decode_deployment(Settings().decode.model_copy(update={"num_dies": NUM_DIES}))
    mean_kv = kv_len + max_tokens // 2
    tokens = delta(before, after, "supernode_decode_tokens_total")
    rows = [
        Row(name, "tpot_ms", statistics.median(steady) * 1e3, hw_cost.tpot_ms(dep, batch_per_die, mean_kv)),
        Row(
            name,
            "decode_tokens_per_s_per_npu",
            tokens / ((t1 - t0) * scale) / (NUM_DIES / dep.dies_per_npu),
            hw_cost.decode_tokens_per_s_per_npu(dep, batch_per_die, mean_kv),
        ),
    ]
    use = host_use(before, after, cpu0, cpu1, "decode", t1 - t0, scale)
    steps = delta(before, after, "supernode_decode_step_seconds_count")
    seq_steps = delta(before, after, "vllm:spec_decode_num_drafts_total")  # one per sequence per step
    batch = seq_steps / steps / NUM_DIES if steps > 0 else 0.0
    busy = delta(before, after, "supernode_decode_step_seconds_sum")
    step_ms = 1e3 * busy / max(steps, 1)
    per_seq_step = tokens / max(seq_steps, 1)
    use.shape = (
        f"batch/die {batch:.2f} of {batch_per_die}, step {step_ms:.1f} ms, {per_seq_step:.3f} tokens/"
        f"seq-step (the worker's TPOT {step_ms / max(per_seq_step, 1e-9):.1f} ms), "
        f"{len(steady)} requests in the window"
    )
    if batch < FULL * batch_per_die:
        use.problem = f"the batch was not kept full ({batch:.2f} of {batch_per_die} per die)"
    return rows, use
