"""`make bench-fidelity-virtual`: fidelity's prefill scenarios on the in-process cluster, on virtual time.

The same engines as the live stack (router, prefill, decode, the fabric's flow model, the pool's block
logic) run in one process on a virtual-time loop, so the host's own speed never shows: what is left
between "measured" and "model" is how the engines batch and price, not step-loop lag. Same prompts,
same model answer (`fidelity.ideal_prefill`) as `make bench-fidelity`; writes
reports/fidelity_virtual.{json,md}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics

from benchmarks.fidelity import BLOCK, REPORTS, Row, ideal_prefill, shared_prefix_load_s, unique_prompt
from supernode.core.request import Request, Sampling
from supernode.inproc import ClusterShape, InprocCluster
from supernode.runtime.config import Settings
from supernode.runtime.deployments import prefill_deployment
from supernode.sim.loop import LoopClock, run_virtual

SCENARIOS = (("prefill-4k", 0.0), ("prefill-cache-50", 0.5), ("prefill-cache-90", 0.9))


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


def main() -> None:
    rows = [row for name, reuse in SCENARIOS for row in run_virtual(scenario(name, reuse))]
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
