"""The faults `make chaos` injects. A scenario is a `Scenario(name, run, ...)` in `SCENARIOS`; `run`
gets a `Ctx` (a freshly started stack, the request mix, the fault-free tokens) and returns a row.

To add one: write
`async def my_fault(ctx: Ctx) -> Row`, usually `return await ctx.under_fault(inject, label)`, and
`register(Scenario("name", my_fault, stack_env={...}))`; `stack_env` says what extra settings its
stack wants. `redis-master-kill` (`needs="redis-cluster"`) runs on a stack of its own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.chaos_load import Outcome, Spec, drive, p99, run_http, run_lean_http, run_sdk
from supernode.core.request import KV_UNREACHABLE
from supernode.launcher import LocalStack
from supernode.sdk import AsyncClient
from supernode.v1 import fabric_pb2, fabric_pb2_grpc

Row = dict[str, Any]
Log = Callable[[str], None]


@dataclass
class Ctx:
    name: str
    stack: LocalStack
    specs: list[Spec]
    baseline: dict[int, Outcome]  # fault-free outcome of each spec index ({} while the baseline runs)
    timeout_s: float  # wall bound per request
    fault_at_s: float  # when the fault hits, since the load started
    say: Log
    stopped: list[str] = field(default_factory=list)  # processes under SIGSTOP (resumed at the end)

    @property
    def spread_s(self) -> float:
        """Arrivals are spread over this many seconds, so requests arrive before and after the fault."""
        return 2 * self.fault_at_s + 1.0

    async def load(self, specs: list[Spec] | None = None, spread_s: float | None = None) -> list[Outcome]:
        async with AsyncClient(self.stack.router_address, timeout_s=self.timeout_s + 5) as client:
            return await drive(
                specs or self.specs,
                lambda spec, at: run_sdk(client, spec, at, self.timeout_s),
                self.spread_s if spread_s is None else spread_s,
                self._progress,
            )

    async def under_fault(
        self,
        inject: Callable[[], Awaitable[str]],
        spread_s: float | None = None,
        specs: list[Spec] | None = None,
    ) -> tuple[list[Outcome], str]:
        """Runs the load and, `fault_at_s` into it, `inject()` (which returns a note on what it did)."""
        load = asyncio.ensure_future(self.load(specs, spread_s))
        await asyncio.sleep(self.fault_at_s)
        note = await inject()
        self.say(f"{self.name}: t={self.fault_at_s:g}s {note}")
        return await load, note

    def signal(self, proc: str, sig: signal.Signals) -> None:
        self.stack.proc(proc).popen.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped.append(proc)

    def resume(self) -> None:
        for name in self.stopped:
            proc = self.stack.proc(name)
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGCONT)
        self.stopped.clear()

    def row(self, outcomes: list[Outcome], notes: list[str]) -> Row:
        kinds = [o.kind for o in outcomes]
        wrong = [o.index for o in outcomes if o.is_finished and not self._matches(o)]
        e2e = [o.e2e_s * 1000 for o in outcomes if o.is_finished and o.e2e_s is not None]
        errors = sorted({o.error for o in outcomes if o.error})
        moved = [o.num_migrations for o in outcomes if o.num_migrations]
        if moved:
            notes = [*notes, f"migrated: {len(moved)} requests, {sum(moved)} moves"]
        if errors:
            notes = [*notes, "errors: " + ", ".join(errors)]
        return {
            "scenario": self.name,
            "requests": len(outcomes),
            "completed": kinds.count("completed"),
            "failed": kinds.count("failed") + kinds.count("shed"),
            "lost_streams": kinds.count("lost"),
            "wrong_tokens": len(wrong),
            "hung": kinds.count("hung"),
            "p99_e2e_ms": _round(p99(e2e)),
            "notes": "; ".join(notes),
        }

    def _matches(self, outcome: Outcome) -> bool:
        expected = self.baseline.get(outcome.index % len(self.specs))
        if expected is None:
            return True  # the baseline itself
        if outcome.token_ids:
            return outcome.token_ids == expected.token_ids
        return outcome.text == expected.text

    def _progress(self, done: int, total: int) -> None:
        self.say(f"{self.name}: {done}/{total} requests ended")


@dataclass
class Scenario:
    name: str
    run: Callable[[Ctx], Awaitable[Row]]
    stack_env: dict[str, str] = field(default_factory=dict)
    needs: str = ""  # a stack of its own ("redis-cluster": run by benchmarks/chaos.py apart)


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    SCENARIOS[scenario.name] = scenario
    return scenario


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _by_worker(ctx: Ctx, outcomes: list[Outcome]) -> str:
    names = {ctx.stack.address(name): name for name in ctx.stack.ports}
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.decode_worker:
            name = names.get(o.decode_worker, o.decode_worker)
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


async def baseline(ctx: Ctx) -> Row:
    outcomes = await ctx.load()
    ctx.baseline.update({o.index: o for o in outcomes if o.is_finished})
    return ctx.row(outcomes, [f"no fault; completed by decode {_by_worker(ctx, outcomes)}"])


def _signal_scenario(proc: str, sig: signal.Signals) -> Callable[[Ctx], Awaitable[Row]]:
    async def run(ctx: Ctx) -> Row:
        async def inject() -> str:
            ctx.signal(proc, sig)
            return f"{sig.name} {proc}"

        outcomes, note = await ctx.under_fault(inject)
        return ctx.row(outcomes, [note, f"completed by decode {_by_worker(ctx, outcomes)}"])

    return run


async def redis_restart(ctx: Ctx, outage_s: float = 3.0) -> Row:
    window: list[float] = []

    async def inject() -> str:
        started = time.monotonic()
        ctx.stack.stop_redis()
        await asyncio.sleep(outage_s)
        ctx.stack.start_redis()
        window.append(time.monotonic() - started)
        return f"redis-server stopped for {outage_s:g}s, restarted empty"

    outcomes, note = await ctx.under_fault(inject, spread_s=ctx.fault_at_s + outage_s + 6.0)
    end = ctx.fault_at_s + (window[0] if window else outage_s)
    bad = [o for o in outcomes if o.kind != "completed"]
    outside = [o for o in bad if not ctx.fault_at_s - 0.5 <= o.sent_at_s <= end]
    notes = [note, f"{len(bad) - len(outside)} of the non-completed arrived while Redis was down",
             f"{len(outside)} failed outside the outage"]  # fmt: skip
    return ctx.row(outcomes, notes)


def _fabric_node_down(worker: str, duration_s: float = 30.0) -> Callable[[Ctx], Awaitable[Row]]:
    """The first node of `worker`'s dies down for `duration_s` under load."""

    async def scenario(ctx: Ctx) -> Row:
        async with fabric_channel(ctx) as fabric:
            described = await fabric.Describe(fabric_pb2.DescribeRequest(), timeout=5)
            dies = next(list(lease.dies) for lease in described.leases if lease.worker_id == worker)
            node = dies[0] // 16
            others = sorted({d // 16 for lease in described.leases if lease.worker_id != worker
                             for d in lease.dies})  # fmt: skip

            async def inject() -> str:
                reply = await fabric.InjectFault(
                    fabric_pb2.InjectFaultRequest(node=node, bandwidth_factor=0.0, duration_s=duration_s),
                    timeout=5,
                )
                return (f"node {node} ({worker}'s dies) down for {duration_s:g}s, "
                        f"{reply.num_failed_transfers} transfers cut")  # fmt: skip

            outcomes, note = await ctx.under_fault(inject)
            await fabric.ClearFaults(fabric_pb2.ClearFaultsRequest(), timeout=5)
        after = [o for o in outcomes if o.sent_at_s >= ctx.fault_at_s]
        sent_after = sum(1 for o in after if o.kind != "completed")
        recomputed = ctx.stack.tail("router", 5000).count(f"lost before decode ({KV_UNREACHABLE}")
        notes = [note, f"other instances on nodes {others}",
                 f"{sent_after} of {len(after)} requests sent after the fault did not complete",
                 f"{recomputed} recomputed (KV unreachable on its die)",
                 f"completed by decode {_by_worker(ctx, outcomes)}"]  # fmt: skip
        return ctx.row(outcomes, notes)

    return scenario


class fabric_channel:  # noqa: N801 - used as a context manager
    def __init__(self, ctx: Ctx) -> None:
        import grpc

        self._channel = grpc.aio.insecure_channel(ctx.stack.address("fabric"))

    async def __aenter__(self) -> fabric_pb2_grpc.FabricStub:
        return fabric_pb2_grpc.FabricStub(self._channel)

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()


async def overload(ctx: Ctx, factor: int = 10) -> Row:
    """`factor` x the baseline's requests at once through the HTTP frontend, after an unloaded probe."""
    address = ctx.stack.address("frontend")

    def send(spec: Spec, at: float) -> Awaitable[Outcome]:
        return run_lean_http(address, spec, at, ctx.timeout_s)

    probe = [await send(spec, 0.0) for spec in ctx.specs[:8]]
    unloaded = p99([o.ttft_s for o in probe if o.ttft_s is not None])
    specs = [Spec(k, s.prompt, s.seed, s.max_tokens) for k in range(factor) for s in ctx.specs]
    specs = [Spec(k, s.prompt, s.seed, s.max_tokens) for k, s in enumerate(specs)]
    ctx.say(f"{ctx.name}: unloaded p99 TTFT {unloaded and unloaded * 1000:.0f} ms; "
            f"sending {len(specs)} streams at once")  # fmt: skip
    outcomes = await drive(specs, send, 0.5, ctx._progress)
    admitted_ttft = p99([o.ttft_s for o in outcomes if o.ttft_s is not None and o.kind != "shed"])
    shed = sum(1 for o in outcomes if o.kind == "shed")
    ratio = admitted_ttft / unloaded if admitted_ttft and unloaded else None
    notes = [f"{factor}x the baseline's {len(ctx.specs)} requests at once over HTTP, first-token "
             f"queueing bound {MAX_QUEUE_DELAY_S:g}s",
             f"unloaded p99 TTFT {_ms(unloaded)} ms, admitted p99 TTFT {_ms(admitted_ttft)} ms"
             + (f" ({ratio:.1f}x; target <= 5x)" if ratio else "")]  # fmt: skip
    row = ctx.row(outcomes, notes)
    row["failed"] -= shed
    row["shed"] = shed
    row["p99_ttft_ms"] = _ms(admitted_ttft)
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def client_abandon(ctx: Ctx, num: int = 16, leave_after_s: float = 1.5) -> Row:
    """Non-streaming HTTP requests for many tokens whose clients leave after `leave_after_s`; how long
    the decode side keeps their sequences afterwards."""
    base = f"http://{ctx.stack.address('frontend')}"
    specs = [
        Spec(k, s.prompt, s.seed, 2048)
        for k, s in enumerate(ctx.specs[k % len(ctx.specs)] for k in range(num))
    ]
    async with httpx.AsyncClient(base_url=base, timeout=leave_after_s) as http:

        async def leave(spec: Spec) -> str:
            body = {
                "model": "deepseek-r1",
                "prompt": spec.prompt,
                "max_tokens": spec.max_tokens,
                "seed": spec.seed,
                "ignore_eos": True,
            }
            try:
                return str((await http.post("/v1/completions", json=body)).status_code)
            except httpx.TimeoutException:
                return "left"

        ends = await asyncio.gather(*(leave(s) for s in specs))
    left_at = time.monotonic()  # the last client has left
    held = await _decode_held(ctx, left_at)
    still = held[-1][1] if held else 0
    freed = next((t for t, n in held if n == 0), None)
    trace = ", ".join(f"+{t:.1f}s: {n}" for t, n in held[:6])
    end = f"all freed after {freed:.1f}s" if freed is not None else f"{still} still held at the end"
    notes = [f"{ends.count('left')} of {num} clients left after {leave_after_s:g}s (max_tokens 2048)",
             f"decode sequences still held after the last left: {trace}", end]  # fmt: skip
    return {
        "scenario": ctx.name, "requests": num, "completed": sum(1 for e in ends if e == "200"),
        "failed": sum(1 for e in ends if e not in ("200", "left")), "lost_streams": 0, "wrong_tokens": 0,
        "hung": still, "p99_e2e_ms": None, "notes": "; ".join(notes),
    }  # fmt: skip


STALL_TIMEOUT_S = 2.0  # the client-stall stack's stall bound (frontend and gRPC streams)


async def client_stall(ctx: Ctx, num: int = 8, max_tokens: int = 8192, watch_s: float = 30.0) -> Row:
    """Streaming HTTP clients that read their first event, then stop reading with the connection
    open (a 4 KiB receive buffer); how long the decode side keeps their sequences afterwards."""
    host, port = ctx.stack.address("frontend").rsplit(":", 1)
    streams = [await _stalled_stream(host, int(port), spec, max_tokens) for spec in ctx.specs[:num]]
    stalled_at = time.monotonic()
    base = f"http://{host}:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            watch = asyncio.ensure_future(_all_cut_at(http, num, stalled_at, watch_s))
            held = await _decode_held(ctx, stalled_at, watch_s)
            cut_at = await watch
            metrics = (await http.get("/metrics")).text
            after = await run_http(http, ctx.specs[0], 0.0, ctx.timeout_s)
    finally:
        for writer in streams:
            writer.close()
    cut = _metric(metrics, _STALLED)
    last_cut = f" (the last at +{cut_at:.1f}s)" if cut_at is not None else ""
    still = held[-1][1] if held else 0
    freed = next((t for t, n in held if n == 0), None)
    trace = ", ".join(f"+{t:.1f}s: {n}" for t, n in held[:: max(1, len(held) // 6)])
    end = f"all freed after {freed:.1f}s" if freed is not None else f"{still} still held after {watch_s:g}s"
    notes = [f"{num} streaming clients stopped reading after their first event (max_tokens {max_tokens}, "
             f"stall bound {STALL_TIMEOUT_S:g}s)", f"{cut:g} cut off as stalled{last_cut}",
             f"decode sequences held since they stopped: {trace}", end,
             f"a request after them {after.kind}"]  # fmt: skip
    return {
        "scenario": ctx.name, "requests": num, "completed": 0, "failed": 0, "lost_streams": 0,
        "wrong_tokens": 0, "hung": still, "p99_e2e_ms": None, "notes": "; ".join(notes),
    }  # fmt: skip


async def _stalled_stream(host: str, port: int, spec: Spec, max_tokens: int) -> asyncio.StreamWriter:
    """Opens a streaming completion on a socket with a tiny receive buffer and reads one event."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    body = json.dumps({"model": "deepseek-r1", "prompt": spec.prompt, "max_tokens": max_tokens,
                       "seed": spec.seed, "stream": True, "ignore_eos": True}).encode()  # fmt: skip
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    writer.write(head + body)
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"data: "), 30)  # streaming started ... and nothing more
    return writer


_STALLED = 'supernode_http_abandoned_total{kind="stalled"}'


async def _all_cut_at(http: httpx.AsyncClient, num: int, since: float, watch_s: float) -> float | None:
    """Seconds after `since` when the frontend had cut off `num` stalled clients (None: not in time)."""
    while time.monotonic() - since < watch_s:
        if _metric((await http.get("/metrics")).text, _STALLED) >= num:
            return time.monotonic() - since
        await asyncio.sleep(0.25)
    return None


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def _decode_held(ctx: Ctx, since: float, watch_s: float = 8.0) -> list[tuple[float, int]]:
    """(seconds since `since`, decode sequences running or waiting) every 0.5 s until 0 or `watch_s`."""
    trace = []
    async with AsyncClient(ctx.stack.router_address, timeout_s=5) as client:
        while True:
            status = await client.status()
            n = sum(w.load.num_running + w.load.num_waiting for w in status.workers if w.role == "decode")
            trace.append((time.monotonic() - since, n))
            if n == 0 or trace[-1][0] >= watch_s:
                return trace
            await asyncio.sleep(0.5)


for _name, _proc, _sig in (
    ("decode-kill9", "decode-0", signal.SIGKILL),
    ("decode-sigstop", "decode-0", signal.SIGSTOP),
    ("prefill-kill9", "prefill-0", signal.SIGKILL),
    ("prefill-sigstop", "prefill-0", signal.SIGSTOP),
):
    register(Scenario(_name, _signal_scenario(_proc, _sig)))
register(Scenario("redis-restart", redis_restart))
register(Scenario("fabric-node-down", _fabric_node_down("decode-0")))
register(Scenario("fabric-prefill-node-down", _fabric_node_down("prefill-0")))
# Overload runs on a stack with an interactive first-token budget: a request expected to wait longer
# than this behind the requests still waiting for their first token is refused at once
# (runtime/start_delay.py), by the router and, seeing also the way back, by the frontend. The fault
# scenarios keep the default (no bound): their requests wait on a frozen worker until liveness moves
# them, and must not be refused meanwhile.
MAX_QUEUE_DELAY_S = 0.3  # wall seconds; the target is 5x an unloaded first token (about 0.1 s here)
register(Scenario("overload-10x", overload, stack_env={
    "SUPERNODE_ROUTER__MAX_QUEUE_DELAY_S": str(MAX_QUEUE_DELAY_S),
    "SUPERNODE_FRONTEND__MAX_QUEUE_DELAY_S": str(MAX_QUEUE_DELAY_S),
}))  # fmt: skip
register(Scenario("client-abandon", client_abandon))
register(Scenario("client-stall", client_stall, stack_env={
    "SUPERNODE_FRONTEND__STREAM_STALL_TIMEOUT_S": str(STALL_TIMEOUT_S),
    "SUPERNODE_RUNTIME__STREAM_STALL_TIMEOUT_S": str(STALL_TIMEOUT_S),
}))  # fmt: skip


async def _needs_cluster(ctx: Ctx) -> Row:
    raise RuntimeError(f"{ctx.name} runs on its own Redis Cluster stack (benchmarks/chaos.py)")


# A master killed under load: its own stack (run_cluster_scenario in benchmarks/chaos.py).
register(Scenario("redis-master-kill", _needs_cluster, needs="redis-cluster"))
