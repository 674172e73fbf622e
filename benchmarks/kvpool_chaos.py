"""The `redis-master-kill` fault: a Redis Cluster master is killed (SIGKILL) under load.

A chaos harness calls `redis_master_kill(stack)` on a `LocalStack` started with a Redis Cluster
(`StackConfig(redis_cluster=3, num_kvpool=2)`, see `stack_config()`); it returns one row of the chaos
table. `python -m benchmarks.kvpool_chaos` starts such a stack, runs the scenario and prints the row.

What happens: the requests are first run fault-free (the reference streams), the cluster is emptied,
then the same requests run again, cycled, `concurrency` at a time while one master is killed
`kill_after_s` into the run, until a second after the failover window. Every completed stream is
compared with its reference; a request that failed is "in the window" when it overlapped
[kill, replica promoted + `margin_s`].
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supernode.kvpool.local_cluster import LocalRedisCluster
from supernode.launcher import LocalStack, StackConfig
from supernode.sdk import AsyncClient, DeadlineExceededError, SupernodeError

SCENARIO = "redis-master-kill"
BLOCK_TOKENS = 128
MAX_CYCLES = 20  # bound on the load: each ask is sent at most this many times


@dataclass(frozen=True, slots=True)
class Ask:
    prompt: list[int]
    seed: int
    max_tokens: int


@dataclass(slots=True)
class Outcome:
    started: float  # time.monotonic()
    finished: float = 0.0
    tokens: list[int] = field(default_factory=list)
    error: str = ""  # SDK error code, "" when completed
    is_hung: bool = False


def stack_config(
    *, ephemeral_ports: bool = False, log_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> StackConfig:
    """The topology this scenario needs: 3 masters + 3 replicas, two pool services (the arguments
    as StackConfig's)."""
    return StackConfig(
        num_prefill=2, num_decode=1, ephemeral_ports=ephemeral_ports, redis_cluster=3, num_kvpool=2,
        env=dict(env or {}), log_dir=log_dir,
    )  # fmt: skip


def workload(num_requests: int, seed: int = 0, max_tokens: int = 24) -> list[Ask]:
    """Prompts sharing a 4-block system prefix, each with 1-3 blocks of its own (blocks land on every
    master), distinct seeds."""
    rng = random.Random(seed)
    system = [rng.randrange(1000, 100_000) for _ in range(4 * BLOCK_TOKENS)]
    asks = []
    for i in range(num_requests):
        own = [rng.randrange(1000, 100_000) for _ in range(rng.randint(1, 3) * BLOCK_TOKENS + 17)]
        asks.append(Ask([*system, *own], seed=seed * 1000 + i, max_tokens=max_tokens))
    return asks


async def run_load(
    address: str,
    asks: list[Ask],
    concurrency: int,
    timeout_s: float = 60.0,
    until: Callable[[], bool] | None = None,
) -> list[Outcome | None]:
    """Streams the asks in order, `concurrency` at a time; records what each stream delivered and how
    it ended. With `until`, asks not yet started when it returns True are not sent (None)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: AsyncClient, ask: Ask) -> Outcome | None:
        async with gate:
            if until is not None and until():
                return None
            out = Outcome(time.monotonic())
            try:
                async for chunk in client.generate(
                    token_ids=ask.prompt, max_tokens=ask.max_tokens, seed=ask.seed, timeout_s=timeout_s
                ):
                    out.tokens.extend(chunk.token_ids)
            except DeadlineExceededError as err:
                out.error, out.is_hung = err.code, True
            except SupernodeError as err:
                out.error = err.code
            out.finished = time.monotonic()
            return out

    async with AsyncClient(address, timeout_s=timeout_s) as client:
        return list(await asyncio.gather(*(one(client, a) for a in asks)))


async def redis_master_kill(
    stack: LocalStack,
    asks: list[Ask] | None = None,
    concurrency: int = 8,
    kill_after_s: float = 1.0,
    margin_s: float = 2.0,
) -> dict[str, object]:
    """Runs the scenario on `stack` (needs `stack.redis_cluster`); returns the chaos row:
    scenario, requests, completed, failed, lost_streams, wrong_tokens, hung, p99_e2e_ms, notes, plus
    failover_s (kill -> every slot served again), failed_outside_window and cached_tokens_after
    (a repeated prompt's cache hit once the replica is promoted: the hit rate recovered)."""
    cluster = stack.redis_cluster
    if cluster is None:
        raise ValueError("stack: start it with StackConfig(redis_cluster=3) (see stack_config())")
    asks = asks or workload(64)
    reference = [o for o in await run_load(stack.router_address, asks, concurrency) if o is not None]
    if any(o.error for o in reference):
        raise RuntimeError(f"the fault-free run failed: {[o.error for o in reference if o.error]}")
    await asyncio.to_thread(_flush, cluster)

    victim = cluster.masters()[0]
    marks: dict[str, float] = {}

    async def fault() -> None:
        await asyncio.sleep(kill_after_s)
        marks["kill"] = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        await asyncio.to_thread(cluster.wait_ok, 60.0)
        marks["recovered"] = time.monotonic()

    def is_over() -> bool:  # the load outlasts the failover window by a second, whatever the host's speed
        return "recovered" in marks and time.monotonic() > marks["recovered"] + margin_s + 1.0

    cycled = asks * MAX_CYCLES
    sent, _ = await asyncio.gather(
        run_load(stack.router_address, cycled, concurrency, until=is_over), fault()
    )
    pairs = [(o, reference[i % len(asks)]) for i, o in enumerate(sent) if o is not None]
    window = (marks["kill"], marks["recovered"] + margin_s)
    return _row(pairs, window, victim) | {
        "failover_s": round(marks["recovered"] - marks["kill"], 3),
        "cached_tokens_after": await _cached_after(stack, asks[0]),
    }


def _row(pairs: list[tuple[Outcome, Outcome]], window: tuple[float, float], victim: int) -> dict[str, object]:
    """The chaos row from (outcome, its fault-free reference) pairs."""
    outcomes = [o for o, _ in pairs]
    completed = [o for o in outcomes if not o.error]
    wrong = sum(o.tokens != r.tokens for o, r in pairs if not o.error)
    failed = [o for o in outcomes if o.error]
    outside = [o for o in failed if o.finished < window[0] or o.started > window[1]]
    e2e_ms = sorted((o.finished - o.started) * 1e3 for o in completed)
    return {
        "scenario": SCENARIO,
        "requests": len(pairs),
        "completed": len(completed),
        "failed": len(failed),
        "lost_streams": sum(1 for o in failed if o.tokens),
        "wrong_tokens": wrong,
        "hung": sum(o.is_hung for o in outcomes),
        "p99_e2e_ms": round(e2e_ms[min(len(e2e_ms) - 1, int(0.99 * len(e2e_ms)))], 1) if e2e_ms else 0.0,
        "failed_outside_window": len(outside),
        "completed_after_failover": sum(1 for o in completed if o.started > window[1]),
        "notes": f"master 127.0.0.1:{victim} SIGKILLed; errors {sorted({o.error for o in failed})}",
    }


async def _cached_after(stack: LocalStack, ask: Ask) -> int:
    async with AsyncClient(stack.router_address, timeout_s=60) as client:
        await client.complete(token_ids=ask.prompt, max_tokens=2, seed=ask.seed)
        again = await client.complete(token_ids=ask.prompt, max_tokens=2, seed=ask.seed)
    return again.stats.num_cached_tokens


def _flush(cluster: LocalRedisCluster) -> None:
    import redis

    for port in cluster.masters():
        with redis.Redis(port=port) as client:
            client.flushall()


async def _main() -> None:
    stack = LocalStack(stack_config(ephemeral_ports=True))
    try:
        await stack.start()
        print(json.dumps(await redis_master_kill(stack), indent=2))
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(_main())
