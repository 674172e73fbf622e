"""`make bench-fidelity`: the live stack against the cost model at the paper's operating points.

Starts the real topology (redis-server and every service as processes), drives it through the SDK and
measures in emulated time; writes reports/fidelity.json (rows: scenario, metric, measured, model,
error_pct) and reports/fidelity.md. Scenarios:

- decode-b96-kv4k / decode-b8-kv4k: closed loop with more requests than the batch holds, so the decode
  batch stays at the chosen size per NPU; over the steady window, decode tokens/s per NPU and TPOT
  while in the batch (first decode chunk to last; the router's per-request TPOT also counts the wait
  for a batch slot, which this closed loop makes long on purpose).
- prefill-4k: 4,096-token prompts, enough for three batches of 16,384 tokens per NPU on 16 NPUs,
  sent at once; prefill tokens/s per NPU (prompt tokens over the emulated time from the first request
  to the last first token) and mean TTFT, next to the model's answer for the same prompts (the pure
  prefill scheduler forms the batches, the cost model prices them).
- prefill-cache-50/90: the same prompts with 50 / 90% of each a cached shared prefix.

It also reports how the host kept up (benchmarks/fidelity_host.py: step-loop lag, idle share, CPU per
service) and picks the largest `time_scale` (1, 1/2, 1/4, 1/10) at which every scenario's step loop
lagged under 2%; that scale goes into reports/bench.json as `live_max_time_scale`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.fidelity_host import LAG_LIMIT_PCT, HostUse, host_use, max_time_scale, merge_bench, stack_cpu
from benchmarks.fidelity_report import REPORTS, Row, write
from supernode.core.request import Request
from supernode.core.scheduler import PrefillScheduler
from supernode.hw import comm
from supernode.hw import cost as hw_cost
from supernode.hw.specs import KV_BYTES_PER_TOKEN, PrefillDeployment
from supernode.launcher import LocalStack, StackConfig, free_port
from supernode.runtime.config import Settings
from supernode.runtime.deployments import decode_deployment, prefill_deployment
from supernode.runtime.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from supernode.sdk import AsyncClient

BLOCK = 128


def unique_prompt(i: int, length: int, prefix: list[int] | None = None) -> list[int]:
    prefix = prefix or []
    own = [257 + ((i * 7919 + k * 104729) % 120_000) for k in range(length - len(prefix))]
    return prefix + own


async def scrape(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def start(env: dict[str, str], num_prefill: int) -> tuple[LocalStack, dict[str, int]]:
    ports = {"decode": free_port(), "prefill": free_port()}
    stack = LocalStack(
        StackConfig(
            num_prefill=num_prefill,
            num_decode=1,
            ephemeral_ports=True,
            env={
                **env,
                "SUPERNODE_DECODE__METRICS_PORT": str(ports["decode"]),
                "SUPERNODE_PREFILL__METRICS_PORT": str(ports["prefill"]) if num_prefill == 1 else "0",
                "SUPERNODE_RUNTIME__LOG_LEVEL": "WARNING",
                # The paper's points are bursts meant to queue (the last 4K prompt of a prefill burst
                # waits ~10 emulated s): no queueing-delay refusals, whatever the time scale.
                "SUPERNODE_PREFILL__MAX_QUEUE_DELAY_S": "0",
            },
        )
    )
    await stack.start()
    return stack, ports


async def wait_for_batch(port: int, batch_per_die: int, timeout_s: float) -> bool:
    """True once the decode batch holds `batch_per_die` per die; False if it never did in time (a host
    too slow to prefill the first wave at this time scale)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await scrape(port)).get("supernode_decode_batch_per_die", 0) >= batch_per_die:
            return True
        await asyncio.sleep(0.2)
    return False


async def decode_scenario(
    name: str, batch_per_die: int, kv_len: int, max_tokens: int, scale: float, duration_s: float
) -> tuple[list[Row], HostUse]:
    num_dies = 2  # one NPU's worth of ranks
    env = {
        "SUPERNODE_RUNTIME__TIME_SCALE": str(scale),
        "SUPERNODE_DECODE__NUM_DIES": str(num_dies),
        "SUPERNODE_DECODE__MAX_BATCH_PER_DIE": str(batch_per_die),
    }
    stack, ports = await start(env, num_prefill=2)
    try:
        target = batch_per_die * num_dies
        concurrency = target + max(4, target // 2)  # a queue of prefilled requests keeps the batch full
        tpots: list[tuple[float, float, float]] = []  # (wall start, wall end, tpot_s)
        stop_at = [float("inf")]  # wall time after which no new request starts: the window's end
        refused: list[str] = []  # requests the stack turned away (retried)
        async with AsyncClient(stack.router_address, timeout_s=600) as client:

            async def loop(worker: int) -> None:
                i = worker
                while time.monotonic() < stop_at[0]:
                    # TPOT while in the batch: from the first decode chunk to the last, per token after
                    # it (the router's stats.tpot_s also counts waiting for a batch slot and the KV pull).
                    arrivals: list[tuple[float, int]] = []
                    prompt = unique_prompt(i, kv_len)
                    try:
                        async for chunk in client.generate(token_ids=prompt, max_tokens=max_tokens, seed=i):
                            if chunk.token_ids:
                                arrivals.append((time.monotonic(), len(chunk.token_ids)))
                    # A busy host: try again.
                    except (UnavailableError, ResourceExhaustedError, DeadlineExceededError) as err:
                        refused.append(err.code)
                        await asyncio.sleep(err.retry_after_s or 0.5)
                        continue
                    (start, _), (end, _) = arrivals[1], arrivals[-1]
                    tokens_after = sum(n for _, n in arrivals[2:])
                    tpots.append((start, end, (end - start) * scale / tokens_after))
                    i += concurrency

            tasks = [asyncio.create_task(loop(w)) for w in range(concurrency)]
            # The window opens once every rank holds the chosen batch (the first wave is prefilled).
            # Warming up is not measured: a busy host may take a while to prefill the first wave.
            if not await wait_for_batch(ports["decode"], batch_per_die, timeout_s=max(120.0, duration_s)):
                stop_at[0] = 0.0
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                print(f"fidelity: {name}: the host never filled the batch at time_scale {scale}", flush=True)
                return [], HostUse(lag_pct=math.inf, idle_pct=math.inf)
            before, cpu0, t0 = await scrape(ports["decode"]), stack_cpu(stack), time.monotonic()
            stop_at[0] = t0 + duration_s * 0.5
            await asyncio.sleep(duration_s * 0.5)
            after, cpu1, t1 = await scrape(ports["decode"]), stack_cpu(stack), time.monotonic()
            await asyncio.gather(*tasks)
    finally:
        stack.stop()
    if refused:
        print(
            f"fidelity: {name}: {len(refused)} requests turned away and retried ({set(refused)})", flush=True
        )
    window_s = (t1 - t0) * scale
    tokens = after["supernode_decode_tokens_total"] - before.get("supernode_decode_tokens_total", 0.0)
    steady = [tp for a, b, tp in tpots if a >= t0 and b <= t1] or [tp for _, _, tp in tpots]
    dep = decode_deployment(Settings().decode.model_copy(update={"num_dies": num_dies}))
    mean_kv = kv_len + max_tokens // 2
    rows = [
        Row(name, "tpot_ms", statistics.median(steady) * 1e3, hw_cost.tpot_ms(dep, batch_per_die, mean_kv)),
        Row(
            name,
            "decode_tokens_per_s_per_npu",
            tokens / window_s / (num_dies / dep.dies_per_npu),
            hw_cost.decode_tokens_per_s_per_npu(dep, batch_per_die, mean_kv),
        ),
    ]
    return rows, host_use(before, after, cpu0, cpu1, "decode", t1 - t0, scale)


async def prefill_scenario(
    name: str, reuse: float, scale: float, num_batches: int = 3
) -> tuple[list[Row], HostUse]:
    env = {"SUPERNODE_RUNTIME__TIME_SCALE": str(scale)}
    stack, ports = await start(env, num_prefill=1)
    settings = Settings()
    prompt_len = 4096
    per_batch = settings.prefill.tokens_per_npu * settings.prefill.num_npus // prompt_len
    cached_len = int(prompt_len * reuse) // BLOCK * BLOCK
    prefix = unique_prompt(10**6, cached_len) if cached_len else []
    try:
        async with AsyncClient(stack.router_address, timeout_s=600) as client:
            if prefix:  # fill the context cache with the shared prefix
                await client.complete(token_ids=unique_prompt(-1, prompt_len, prefix), max_tokens=1)
            before, cpu0, t0 = await scrape(ports["prefill"]), stack_cpu(stack), time.monotonic()
            n = per_batch * num_batches
            results = await asyncio.gather(
                *(
                    client.complete(token_ids=unique_prompt(i, prompt_len, prefix), max_tokens=1)
                    for i in range(n)
                )
            )
            after, cpu1, t1 = await scrape(ports["prefill"]), stack_cpu(stack), time.monotonic()
    finally:
        stack.stop()
    dep = prefill_deployment(settings.prefill)
    shape = [
        (r.stats.num_prompt_tokens - r.stats.num_cached_tokens, r.stats.num_cached_tokens) for r in results
    ]
    load_s = shared_prefix_load_s(dep, len(results), cached_len, settings.kvpool.block_tokens)
    model_s, model_ttft_s = ideal_prefill(
        dep, shape, settings.prefill.tokens_per_npu * settings.prefill.num_npus, load_s
    )
    total_tokens = sum(r.stats.num_prompt_tokens for r in results)
    elapsed_s = (t1 - t0) * scale  # emulated, from the first request sent to the last first token
    rows = [
        Row(name, "prefill_tokens_per_s_per_npu", total_tokens / elapsed_s / dep.num_npus,
            total_tokens / model_s / dep.num_npus),
        Row(name, "mean_ttft_ms", statistics.fmean(r.stats.ttft_s for r in results) * 1e3,
            model_ttft_s * 1e3),
    ]  # fmt: skip
    return rows, host_use(before, after, cpu0, cpu1, "prefill", t1 - t0, scale, len(results))


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


async def run_all(
    scale: float, quick: bool, only: set[str], give_up: bool = False
) -> tuple[list[Row], dict[str, HostUse]]:
    """Every scenario at `scale`; with `give_up`, stops at the first whose step loop lags over the mark
    (a slower scale is tried next, so the rest would be measured again anyway)."""
    duration = 20.0 if quick else 40.0
    rows: list[Row] = []
    lags: dict[str, HostUse] = {}
    scenarios = [("decode-b96-kv4k", 48), ("decode-b8-kv4k", 4)]
    scenarios += [("prefill-4k", 0.0), ("prefill-cache-50", 0.5), ("prefill-cache-90", 0.9)]  # type: ignore[list-item]
    for name, knob in scenarios:
        if only and name not in only:
            continue
        print(f"fidelity: {name} (time_scale {scale}) ...", flush=True)
        if name.startswith("decode"):
            got, lags[name] = await decode_scenario(name, int(knob), 4096, 128, scale, duration)
        else:
            got, lags[name] = await prefill_scenario(name, knob, scale, num_batches=2 if quick else 3)
        rows += got
        if give_up and lags[name].lag_pct >= LAG_LIMIT_PCT:
            print(f"fidelity: {name} lagged {lags[name].lag_pct:.1f}% at time_scale {scale}", flush=True)
            break
    return rows, lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.0, help="fixed time_scale (0 = pick one)")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    args = parser.parse_args()
    scales = [args.time_scale] if args.time_scale else [1.0, 0.5, 0.25, 0.1]
    only = {name for name in args.only.split(",") if name}
    lags_by_scale: dict[float, dict[str, float]] = {}
    for scale in scales:
        rows, uses = asyncio.run(run_all(scale, args.quick, only, give_up=scale != scales[-1]))
        lags_by_scale[scale] = {name: use.lag_pct for name, use in uses.items()}
        worst = max(lags_by_scale[scale].values(), default=0.0)
        if max_time_scale({scale: lags_by_scale[scale]}) or scale == scales[-1]:
            write(rows, uses, scale)
            print(f"wrote {REPORTS / 'fidelity.json'} and {REPORTS / 'fidelity.md'}")
            break
        print(
            f"fidelity: the step loop lagged {worst:.1f}% at time_scale {scale}; trying a slower one",
            flush=True,
        )
    best = max_time_scale(lags_by_scale)
    if not only and (best or not args.time_scale):  # every scenario, and a scale found (or none at all)
        merge_bench(REPORTS / "bench.json", {"live_max_time_scale": best})
        print(f"live_max_time_scale = {best} (reports/bench.json)")


if __name__ == "__main__":
    main()
