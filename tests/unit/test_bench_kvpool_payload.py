"""The full-size benchmark's reads take turns call by call, and each is metered on its own calls."""

from __future__ import annotations

import asyncio

from benchmarks import kvpool_payload
from benchmarks.kvpool_setup import FULL_CALLS


def test_reads_take_turns_and_each_is_metered_on_its_own_calls() -> None:
    order: list[str] = []
    cpu = {"pool": 0.0, "copy": 0.0}

    def read(name: str, num_bytes: int, cpu_s: float):
        async def call() -> int:
            order.append(name)
            cpu[name] += cpu_s
            await asyncio.sleep(0.001)
            return num_bytes

        return call

    got = asyncio.run(
        kvpool_payload._interleaved(
            {
                "pool": (read("pool", 2_000_000, 0.004), [lambda: cpu["pool"]]),
                "copy": (read("copy", 1_000_000, 0.001), [lambda: cpu["copy"]]),
            }
        )
    )
    assert order == ["pool", "copy"] * (FULL_CALLS + 1), "one warm-up call each, then turns"
    (pool_mb_s, (pool_ms,)), (copy_mb_s, (copy_ms,)) = got["pool"], got["copy"]
    assert abs(pool_ms - 2.0) < 1e-9 and abs(copy_ms - 1.0) < 1e-9, "CPU ms per MB of its own calls only"
    assert 0 < pool_mb_s < 2_000 and 0 < copy_mb_s < 1_000, "MB over its own calls' wall time (>= 1 ms each)"
