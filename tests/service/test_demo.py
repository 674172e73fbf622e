"""`supernode demo` is built on the load generator: its workload goes through the runner and SdkTarget
over real gRPC (to the router's codec over the in-process cluster, which runs the real engines) and its
report comes from the shared metrics and percentile."""

from __future__ import annotations

from rich.console import Console

from supernode.demo import demo_specs, drive, report
from supernode.inproc import ClusterShape, InprocCluster, serve_router
from supernode.loadgen.stats import percentile
from supernode.runtime.clock import VirtualClock
from supernode.runtime.config import Settings

SHAPE = ClusterShape(num_prefill=2, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**12)


async def test_demo_drives_the_load_generator_and_reports() -> None:
    specs = demo_specs(12)
    assert len({s.session_id for s in specs}) > 1 and any(s.num_shared_tokens for s in specs)
    settings = Settings(tokens={"tokenizer": "byte"})  # token ids only: no BPE to load
    async with serve_router(InprocCluster(settings, VirtualClock(), SHAPE), settings) as address:
        results, duration_s = await drive(address, specs, concurrency=4)
    assert len(results) == 12 and all(r.is_ok for r in results) and duration_s > 0
    assert any(r.num_cached_tokens for r in results), "shared prefixes hit the real context cache"
    console = Console(record=True, width=100)
    report(console, results, duration_s)
    text = console.export_text()
    assert "12 / 0" in text
    p99 = percentile([r.ttft_s * 1e3 for r in results], 99)
    assert f"{p99:.1f}" in text  # numpy's percentile, the same one as bench reports
