"""`make bench-fidelity-virtual`: fidelity's scenarios on the in-process cluster, on virtual time.

The same engines as the live stack (router, prefill, decode, the fabric's flow model, the pool's block
logic) run in one process on a virtual-time loop, so the host's own speed never shows: what is left
between "measured" and "model" is how the engines batch and price, not step-loop lag. Same prompts,
same model answer as `make bench-fidelity`: the prefill burst arrives at once (no gate is needed, and
the model charges its cached prefixes' load, which here is on the path), the decode closed loop keeps
a full batch waiting and is measured over the same steady window; writes
reports/fidelity_virtual.{json,md}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics

from prometheus_client import CollectorRegistry

from benchmarks.fidelity_decode import NUM_DIES, in_batch_tpot
from benchmarks.fidelity_model import BLOCK, ideal_prefill, shared_prefix_load_s, unique_prompt
from benchmarks.fidelity_report import REPORTS, Row
from supernode.core.request import Request, Sampling
from supernode.hw import cost as hw_cost
from supernode.inproc import ClusterShape, InprocCluster
from supernode.runtime.config import Settings
from supernode.runtime.deployments import decode_deployment, prefill_deployment
from supernode.sim.loop import LoopClock, run_virtual

SCENARIOS = (("prefill-4k", 0.0), ("prefill-cache-50", 0.5), ("prefill-cache-90", 0.9))
DECODE_SCENARIOS = (("decode-b96-kv4k", 48), ("decode-b8-kv4k", 4))


async def scenario(name: str, reuse: float, num_batches: int = 2) -> list[Row]:
    settings = Settings()
    clock = LoopClock(asyncio.get_running_loop())
    shape = ClusterShape(num_prefill=1, num_decode=1, prefill_npus=settings.prefill.num_npus, decode_dies=2)
    cluster = InprocCluster(settings, clock, shape, materialise_tokens=False)
    prompt_len = 4096
    budget = settings.prefill.tokens_per_npu * settings.prefill.num_npus
    cached_len = int(prompt_len * reuse) // BLOCK * BLOCK
    prefix = unique_prompt(10**6, cached_len) if cached_len else []

    async def one(i: int) -> Request:
        request = cluster.router.make_request(
            str(i), "", unique_prompt(i, prompt_len, prefix), 1, Sampling(i)
        )
        async with contextlib.aclosing(cluster.router.generate(request)) as chunks:
            async for _ in chunks:
                pass
        return request

    async with cluster:
        if prefix:  # fill the context cache with the shared prefix
            await one(-1)
        t0 = clock.now()
        done = await asyncio.gather(*(one(i) for i in range(budget // prompt_len * num_batches)))
        elapsed = clock.now() - t0
    dep = prefill_deployment(settings.prefill)
    load_s = shared_prefix_load_s(dep, len(done), cached_len, settings.kvpool.block_tokens)
    model_s, model_ttft = ideal_prefill(
        dep, [(r.num_prompt_tokens - r.num_cached_tokens, r.num_cached_tokens) for r in done], budget, load_s
    )
    total = sum(r.num_prompt_tokens for r in done) / dep.num_npus
    return [
        Row(name, "prefill_tokens_per_s_per_npu", total / elapsed, total / model_s),
        Row(name, "mean_ttft_ms", statistics.fmean(r.ttft_s for r in done) * 1e3, model_ttft * 1e3),
    ]


def _counter(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for family in registry.collect() for s in family.samples if s.name == name)


async def decode_scenario(name: str, batch_per_die: int, window_s: float = 24.0) -> list[Row]:
    """The live decode scenario's closed loop and window (benchmarks/fidelity_decode.py), on virtual
    time: 4,096-token prompts, 128 output tokens, twice the batch in flight."""
    data = Settings().model_dump()
    data["decode"]["max_batch_per_die"] = batch_per_die
    settings = Settings.model_validate(data)
    clock = LoopClock(asyncio.get_running_loop())
    shape = ClusterShape(
        num_prefill=2, num_decode=1, prefill_npus=settings.prefill.num_npus, decode_dies=NUM_DIES
    )
    cluster = InprocCluster(settings, clock, shape)  # tokens drawn, as live: chunks arrive step by step
    engine = cluster.decodes[0]
    concurrency = 2 * batch_per_die * NUM_DIES
    tpots: list[tuple[float, float, float]] = []

    async def loop(worker: int) -> None:
        i = worker
        while True:
            request = cluster.router.make_request(str(i), "", unique_prompt(i, 4096), 128, Sampling(i))
            arrivals: list[tuple[float, int]] = []
            async with contextlib.aclosing(cluster.router.generate(request)) as chunks:
                async for chunk in chunks:
                    if chunk.num_tokens:
                        arrivals.append((clock.now(), chunk.num_tokens))
            tpots.append(in_batch_tpot(arrivals, 1.0))
            i += concurrency

    names = (
        "supernode_decode_tokens_total",
        "supernode_decode_step_seconds_count",
        "vllm:spec_decode_num_drafts_total",
    )
    async with cluster:
        tasks = [asyncio.create_task(loop(w)) for w in range(concurrency)]
        for _ in range(12_000):  # up to 10 virtual minutes; the first wave fills it in seconds
            if min(map(len, engine.scheduler.running)) >= batch_per_die:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{name}: the batch never filled")
        before, t0 = [_counter(engine.metrics.registry, n) for n in names], clock.now()
        await asyncio.sleep(window_s)
        after, t1 = [_counter(engine.metrics.registry, n) for n in names], clock.now()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    tokens, steps, seq_steps = (b - a for a, b in zip(before, after, strict=True))
    dep = decode_deployment(settings.decode.model_copy(update={"num_dies": NUM_DIES}))
    print(f"{name}: batch/die {seq_steps / steps / NUM_DIES:.2f} of {batch_per_die}, "
          f"{tokens / seq_steps:.3f} tokens/seq-step")  # fmt: skip
    steady = [tp for begin, end, tp in tpots if begin >= t0 and end <= t1]
    return [
        Row(name, "tpot_ms", statistics.median(steady) * 1e3, hw_cost.tpot_ms(dep, batch_per_die, 4096 + 64)),
        Row(
            name,
            "decode_tokens_per_s_per_npu",
            tokens / (t1 - t0) / (NUM_DIES / dep.dies_per_npu),
            hw_cost.decode_tokens_per_s_per_npu(dep, batch_per_die, 4096 + 64),
        ),
    ]


def main() -> None:
    rows = [row for name, batch in DECODE_SCENARIOS for row in run_virtual(decode_scenario(name, batch))]
    rows += [row for name, reuse in SCENARIOS for row in run_virtual(scenario(name, reuse))]
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "fidelity_virtual.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
    lines = ["| scenario | metric | measured | model | error % |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.scenario} | {r.metric} | {r.measured:.1f} | {r.model:.1f} | {r.error_pct:+.1f} |" for r in rows
    ]
    (REPORTS / "fidelity_virtual.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
