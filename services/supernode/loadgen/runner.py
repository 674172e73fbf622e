"""Sends a workload to a target, open loop (timed arrivals) or closed loop (fixed concurrency).

Lifecycle of one request: due (its arrival offset / time_scale, or a free worker in closed loop) ->
waits for its session's previous turn (if any) -> waits for a concurrency slot (if capped) -> sent ->
streamed by the target -> recorded, `on_done` called. This is the only loadgen module that waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.targets import Target

YIELD_EVERY = 32  # when behind schedule, let the loop run sends at least this often


@dataclass(frozen=True, slots=True)
class LoadPlan:
    is_closed_loop: bool
    concurrency: int  # closed loop: workers; open loop: cap on requests in flight (0 = no cap)
    time_scale: float = 1.0  # emulated seconds per wall second


@dataclass(slots=True)
class RunOutcome:
    results: list[RequestResult]  # in workload order, wall times rebased to the run start
    wall_duration_s: float  # run start to last completion
    achieved_rate_wall: float  # requests sent per wall second (first to last send)
    p99_send_lag_ms: float  # wall ms from due to sent, excluding session waits, 99th percentile


class _Run:
    def __init__(
        self,
        target: Target,
        specs: Sequence[RequestSpec],
        plan: LoadPlan,
        on_done: Callable[[RequestResult], None],
    ) -> None:
        self.target, self.specs, self.plan, self.on_done = target, specs, plan, on_done
        self.results = [RequestResult(s.request_id) for s in specs]
        self.finished: dict[str, asyncio.Event] = {s.after: asyncio.Event() for s in specs if s.after}
        self.slots = asyncio.Semaphore(plan.concurrency) if plan.concurrency > 0 else None
        self.lags: list[float] = []

    async def one(self, index: int, due: float) -> None:
        spec, result = self.specs[index], self.results[index]
        if spec.after:
            await self.finished[spec.after].wait()
        result.scheduled_s = max(due, time.perf_counter()) if spec.after else due
        try:
            if self.slots is not None and not self.plan.is_closed_loop:
                async with self.slots:
                    await self._send(spec, result)
            else:
                await self._send(spec, result)
        finally:
            event = self.finished.get(spec.request_id)
            if event is not None:
                event.set()
        self.on_done(result)

    async def _send(self, spec: RequestSpec, result: RequestResult) -> None:
        result.sent_s = time.perf_counter()
        if not spec.after:
            self.lags.append(result.sent_s - result.scheduled_s)
        await self.target.send(spec, result)

    async def open_loop(self, t0: float) -> None:
        scale = self.plan.time_scale
        async with asyncio.TaskGroup() as tg:
            for i, spec in enumerate(self.specs):
                due = t0 + spec.arrival_s / scale
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                tg.create_task(self.one(i, due))

    async def closed_loop(self) -> None:
        indices = iter(range(len(self.specs)))

        async def worker() -> None:
            for i in indices:
                await self.one(i, time.perf_counter())

        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, self.plan.concurrency)):
                tg.create_task(worker())


async def run_load(
    target: Target,
    specs: Sequence[RequestSpec],
    plan: LoadPlan,
    on_done: Callable[[RequestResult], None] = lambda _: None,
) -> RunOutcome:
    """Send every spec and return the results; the target must already be entered."""
    run = _Run(target, specs, plan, on_done)
    t0 = time.perf_counter()
    if plan.is_closed_loop:
        await run.closed_loop()
    else:
        await run.open_loop(t0)
    for result in run.results:
        result.rebase(t0)
    return _outcome(run.results, run.lags)


def _outcome(results: list[RequestResult], lags: list[float]) -> RunOutcome:
    sends = sorted(r.sent_s for r in results)
    wall = max((r.done_s for r in results), default=0.0)
    span = sends[-1] - sends[0] if len(sends) > 1 else 0.0
    rate = (len(sends) - 1) / span if span > 0 else float("inf")
    lags.sort()
    p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000.0 if lags else 0.0
    return RunOutcome(results, wall, rate, p99)
