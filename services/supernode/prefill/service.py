"""The prefill service: one emulated prefill instance (default: the paper's 16 NPUs / 32 dies, EP32).

A request's states here:
1. validated, its block keys computed (prefix-chained, `kvpool.block_tokens` per block);
2. context-cache lookup in the pool: the leading full blocks already cached are *loaded* over UB from
   the EMS DRAM pool into the instance (the fabric charges the transfer), the rest must be computed;
3. queued in the prefill scheduler (bounded; RESOURCE_EXHAUSTED when full);
4. computed in one or more token-budgeted batches by the step loop (the cost model prices each batch);
5. new blocks stored in the pool (not charged: the paper stores them asynchronously), the first token
   drawn from the token model, and a KvHandle returned for the decode side to pull.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

import grpc

from supernode.core import blocks, tokens
from supernode.core.scheduler import PrefillBatch, PrefillJob, PrefillScheduler, QueueFullError
from supernode.hw import cost as hw_cost
from supernode.hw import specs
from supernode.prefill import scoring
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.deployments import prefill_deployment
from supernode.runtime.engine import StepLoop
from supernode.runtime.errors import ResourceExhaustedError, SupernodeError, UnavailableError, invalid
from supernode.runtime.metrics import start_metrics_server
from supernode.runtime.peers import DieLease, FabricClient, PoolClient, worker_builder
from supernode.runtime.server import Drain, unary
from supernode.runtime.worker_metrics import CacheMetrics, WorkerMetrics
from supernode.v1 import common_pb2, kvpool_pb2, prefill_pb2, prefill_pb2_grpc

log = logging.getLogger(__name__)
NUM_POOL_CPUS = 48 * 4  # reference 1.2: 48 nodes x 4 Kunpeng CPUs contribute DRAM to the EMS pool
MAX_BACKGROUND_STORES = 1024  # bound on KV store transfers in flight; beyond it stores are not timed


class PrefillService(prefill_pb2_grpc.PrefillServicer):
    service_names = (prefill_pb2.DESCRIPTOR.services_by_name["Prefill"].full_name,)

    def __init__(
        self, settings: Settings, clock: Clock, fabric: FabricClient, pool: PoolClient, drain: Drain
    ) -> None:
        self.settings = settings
        self.cfg = settings.prefill
        self.block_tokens = settings.kvpool.block_tokens
        self.worker_id = self.cfg.worker_id or f"prefill-{self.cfg.port}"
        self.clock = clock
        self.fabric = fabric
        self.pool = pool
        self.drain = drain
        self.deployment = prefill_deployment(self.cfg)
        num_dies = self.cfg.num_npus * self.deployment.dies_per_npu
        self.lease = DieLease(fabric, self.worker_id, "prefill", num_dies, settings.fabric.lease_ttl_s)
        self.scheduler: PrefillScheduler = scoring.make_scheduler(settings)  # with an XL3M scoring queue
        self.loop: StepLoop[PrefillBatch] = StepLoop(
            self.worker_id, clock, self.scheduler.schedule, self._price, self._finish
        )
        self._done: dict[str, asyncio.Future[float]] = {}
        self._compute_s: dict[str, float] = {}  # emulated batch time each request took part in
        self._stores: set[asyncio.Task[None]] = set()  # KV stores moving over UB in the background
        self.metrics = WorkerMetrics("prefill", self.worker_id, self.cfg.num_npus)
        self.cache_metrics = CacheMetrics(self.metrics)
        self.scorer = scoring.Scorer(self, self.metrics.registry, self.worker_id)

    async def start(self) -> None:
        start_metrics_server(self.cfg.metrics_port, self.settings.runtime.bind_host, self.metrics.registry)
        await self.lease.acquire()
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        if self._stores:
            await asyncio.wait(self._stores, timeout=5.0)
        await self.lease.release()
        await self.fabric.close()
        await self.pool.close()

    def _price(self, batch: PrefillBatch) -> hw_cost.Cost:
        return scoring.price(self.deployment, batch)

    def _finish(self, batch: PrefillBatch, cost: hw_cost.Cost) -> None:
        self.scorer.on_batch(batch, cost)
        self.metrics.on_step(
            len(batch.slices), len(batch.slices), cost.total_us / 1e6, cost.breakdown_us, batch.num_new_tokens
        )
        for s in batch.slices:
            rid = s.job.request_id
            self._compute_s[rid] = self._compute_s.get(rid, 0.0) + cost.total_us / 1e6
        for job in self.scheduler.postprocess(batch):
            future = self._done.pop(job.request_id, None)
            if future is not None and not future.done():
                future.set_result(self.clock.now())
        self.metrics.on_queue(
            len(self.scheduler.waiting),
            self.scheduler.num_waiting_tokens,
            self.block_tokens,
            self.loop.stats.max_lag_s,
        )

    @unary()
    async def Prefill(self, request: prefill_pb2.PrefillRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        prompt = self._validate(request)
        seed = request.sampling.seed
        # Hashing and indexing long prompts runs off the event loop, so RPCs and the step loop keep going.
        keys = await asyncio.to_thread(blocks.block_keys, prompt, self.block_tokens)
        num_full = len(prompt) // self.block_tokens
        num_cached_blocks = await self.pool.lookup(keys[:num_full]) if num_full else 0
        # At least the last prompt token is computed, so a fully cached prompt still yields a token.
        num_cached = min(num_cached_blocks * self.block_tokens, len(prompt) - 1)
        load_s = await self._load_cached(keys, num_cached)
        self.cache_metrics.on_lookup(
            len(prompt),
            num_cached,
            num_cached_blocks,
            num_full - num_cached_blocks,
            num_cached * specs.KV_BYTES_PER_TOKEN,
        )

        job = PrefillJob(request.request_id, len(prompt), num_cached)
        queued_at = self.clock.now()
        done = asyncio.get_running_loop().create_future()
        try:
            self.scheduler.add(job)
        except QueueFullError as err:
            raise ResourceExhaustedError(f"prefill queue full: {err}", retry_after_s=0.5) from err
        self._done[request.request_id] = done
        self.loop.wake()
        try:
            finished_at = await done
        finally:
            self.scheduler.remove(job)
            self._done.pop(request.request_id, None)
            compute_s = self._compute_s.pop(request.request_id, 0.0)

        await self._store_blocks(prompt, keys, num_cached // self.block_tokens)
        first = tokens.next_token(prompt, seed)
        return prefill_pb2.PrefillResponse(
            first_token=first,
            kv=common_pb2.KvHandle(
                request_id=request.request_id,
                namespace=self.settings.kvpool.namespace,
                block_keys=keys,
                num_tokens=len(prompt),
                nominal_bytes=len(prompt) * specs.KV_BYTES_PER_TOKEN,
                prefill_worker=self.worker_id,
                prefill_die=self._die_for(request.request_id),
                block_tokens=self.block_tokens,
            ),
            num_cached_tokens=num_cached,
            queue_s=max(0.0, finished_at - queued_at - compute_s),
            load_s=load_s,
            compute_s=compute_s,
        )

    @unary()
    async def Score(self, request: prefill_pb2.ScoreRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return await self.scorer.score(request)

    @unary(track=False)
    async def Load(self, request: common_pb2.LoadRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        return common_pb2.LoadReport(
            worker_id=self.worker_id,
            role="prefill",
            num_running=self.scheduler.num_running,
            num_waiting=len(self.scheduler.waiting),
            max_queue=self.cfg.max_queue,
            kv_tokens_used=self.scheduler.num_waiting_tokens,
            kv_tokens_capacity=self.scheduler.token_budget,
            draining=not self.drain.is_admitting,
            num_dies=len(self.lease.dies),
        )

    def _validate(self, request: prefill_pb2.PrefillRequest) -> list[int]:
        if not request.request_id:
            raise invalid("request_id", "must not be empty")
        prompt = list(request.token_ids)
        if not prompt:
            raise invalid("token_ids", "must hold at least one token")
        bad = next((t for t in prompt if not tokens.is_valid_token(t)), None)
        if bad is not None:
            raise invalid("token_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
        return prompt

    def _die_for(self, request_id: str) -> int:
        if not self.lease.dies:
            raise UnavailableError("prefill holds no dies (fabric lease missing)")
        digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
        return self.lease.dies[int.from_bytes(digest, "little") % len(self.lease.dies)].index

    async def _load_cached(self, keys: list[str], num_cached: int) -> float:
        """Charges loading the cached prefix from the EMS DRAM pool over UB; emulated seconds."""
        if num_cached == 0:
            return 0.0
        # The pool is spread over every node's CPUs by consistent hashing (reference 2.3); the
        # prefix's first block picks the CPU that serves it.
        die = self._die_for(keys[0])
        cpu = int(keys[0][:8], 16) % NUM_POOL_CPUS
        result = await self.fabric.transfer(
            ("cpu", cpu), ("die", die), num_cached * specs.KV_BYTES_PER_TOKEN, "ub", "kv-load"
        )
        return result.duration_s

    async def _store_blocks(self, prompt: list[int], keys: list[str], first_new: int) -> None:
        """Writes the new blocks to the pool; their UB move to the EMS DRAM pool runs in the background.

        The bytes land in Redis before the handle is returned (decode reads them next); the emulated
        UB write is not on the request's path, as in the paper's asynchronous store (reference 2.3),
        but it does occupy the fabric's links.
        """
        token_blocks = blocks.split_blocks(prompt, self.block_tokens)
        new = [kvpool_pb2.Block(key=keys[i], tokens=token_blocks[i]) for i in range(first_new, len(keys))]
        for start in range(0, len(new), self.settings.kvpool.max_blocks_per_call):
            await self.pool.put(new[start : start + self.settings.kvpool.max_blocks_per_call])
        num_tokens = sum(len(b.tokens) for b in new)
        if num_tokens and len(self._stores) < MAX_BACKGROUND_STORES:
            task = asyncio.create_task(self._store_transfer(keys[first_new], num_tokens))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def _store_transfer(self, first_key: str, num_tokens: int) -> None:
        die = self._die_for(first_key)
        cpu = int(first_key[:8], 16) % NUM_POOL_CPUS
        try:
            await self.fabric.transfer(
                ("die", die), ("cpu", cpu), num_tokens * specs.KV_BYTES_PER_TOKEN, "ub", "kv-store"
            )
        except SupernodeError as err:  # a store that cannot move is only a lost cache entry's timing
            log.debug("background KV store transfer failed: %s", err.message)


def build(
    settings: Settings,
    clock: Clock | None = None,
    fabric: FabricClient | None = None,
    pool: PoolClient | None = None,
) -> Callable[[grpc.aio.Server, Drain], PrefillService]:
    """The host's factory; tests pass a virtual clock and in-memory peers."""
    return worker_builder(
        PrefillService, prefill_pb2_grpc.add_PrefillServicer_to_server, settings, clock, fabric, pool
    )
