"""`supernode demo` is built on the load generator: its workload goes through the runner and SdkTarget
over real gRPC (to the fake router here) and its report comes from the shared metrics and percentile."""

from __future__ import annotations

from rich.console import Console

from supernode.demo import demo_specs, drive, report
from supernode.frontend.fake_router import serve_fake_router
from supernode.loadgen.stats import percentile


async def test_demo_drives_the_load_generator_and_reports() -> None:
    specs = demo_specs(12)
    assert len({s.session_id for s in specs}) > 1 and any(s.num_shared_tokens for s in specs)
    async with serve_fake_router() as (address, router):
        results, duration_s = await drive(address, specs, concurrency=4)
    assert len(router.requests) == 12 and all(r.is_ok for r in results) and duration_s > 0
    console = Console(record=True, width=100)
    report(console, results, duration_s)
    text = console.export_text()
    assert "12 / 0" in text
    p99 = percentile([r.ttft_s * 1e3 for r in results], 99)
    assert f"{p99:.1f}" in text  # numpy's percentile, the same one as bench reports
