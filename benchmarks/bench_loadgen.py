"""How fast the load generator issues requests, against a null target (no server, no engines: only the
generator's own overhead is measured).

`run()` returns `loadgen_max_rps`: the highest constant request rate (requests per wall second) that one
process sustains on a doubling ladder, where sustained means at least 95% of the rate was sent and the
p99 send lag stayed under 20 ms. Requests are short: 16 prompt tokens, 4 output tokens in 4 chunks 1 ms
apart. The generator must never be the bottleneck of a load test; the issue asks for >= 1,000.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from supernode.loadgen import arrivals, workloads
from supernode.loadgen.lengths import parse_length
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.runner import LoadPlan, run_load

STEP_S = 0.5  # wall seconds of arrivals per ladder step
MAX_LAG_MS = 20.0
RATES = tuple(1000.0 * 2**k for k in range(8))  # 1,000 .. 128,000 req/s


class NullTarget:
    """Streams `max_tokens` tokens, `tokens_per_chunk` per chunk, yielding to the event loop between
    chunks and charging `tpot_s` per token: what is left is the generator's own overhead."""

    name = "null"

    def __init__(self, tpot_s: float = 0.0, ttft_s: float = 0.0, tokens_per_chunk: int = 1) -> None:
        self._tpot_s, self._ttft_s, self._per_chunk = tpot_s, ttft_s, tokens_per_chunk

    async def __aenter__(self) -> NullTarget:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def send(self, spec: RequestSpec, result: RequestResult) -> None:
        await asyncio.sleep(self._ttft_s)
        result.first_token_s = time.perf_counter()
        emitted = min(self._per_chunk, spec.max_tokens)
        while emitted < spec.max_tokens:
            await asyncio.sleep(self._tpot_s * self._per_chunk)
            emitted += min(self._per_chunk, spec.max_tokens - emitted)
            result.itl_s.append(self._tpot_s * self._per_chunk)
        result.done_s = time.perf_counter()
        result.is_ok = True
        result.num_prompt_tokens, result.num_output_tokens = len(spec.token_ids), spec.max_tokens
        result.ttft_s = self._ttft_s
        result.tpot_s = self._tpot_s if spec.max_tokens > 1 else 0.0
        result.e2e_s = self._ttft_s + self._tpot_s * (spec.max_tokens - 1)


async def _sustains(rate: float) -> bool:
    num = max(200, int(rate * STEP_S))
    specs = workloads.synthetic(
        arrivals.constant_arrivals(num, rate), parse_length("16"), parse_length("4"), seed=0, label="bench"
    )
    async with NullTarget(tpot_s=0.001) as target:
        outcome = await run_load(target, specs, LoadPlan(is_closed_loop=False, concurrency=0))
    is_done = all(r.is_ok for r in outcome.results)
    return is_done and outcome.achieved_rate_wall >= 0.95 * rate and outcome.p99_send_lag_ms <= MAX_LAG_MS


async def _ladder() -> float:
    best = 0.0
    for rate in RATES:
        if not await _sustains(rate):
            break
        best = rate
    return best


def run() -> dict[str, float]:
    """`loadgen_max_rps` in requests per wall second (0.0 if even the lowest rung failed)."""
    return {"loadgen_max_rps": asyncio.run(_ladder())}


if __name__ == "__main__":
    print(run())
