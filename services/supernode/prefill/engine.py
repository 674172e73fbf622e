"""The prefill worker's engine: one emulated prefill instance, transport-free.

A request's states here (core/request.py):
1. QUEUED: validated, its block keys computed once (prefix-chained, `kvpool.block_tokens` per block),
   the pool asked how many leading full blocks are cached; those are *loaded* over UB from the EMS DRAM
   pool (the fabric charges the transfer), then it waits in the bounded prefill queue
   (RESOURCE_EXHAUSTED when full);
2. PREFILLING: computed in one or more token-budgeted batches by the step loop (the cost model prices
   each batch it is given);
3. FINISHED: the first token drawn from the token model and offered to the caller at once, then the new
   blocks stored in the pool (their UB move to the EMS pool runs in the background, as the paper
   stores asynchronously) and a KvHandle returned.
A caller that leaves cancels it (CANCELLED); a batch already running it completes. If the step loop
fails, every queued request FAILS with UNAVAILABLE and the worker refuses new ones (runtime/supervision.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Sequence

from supernode.core import blocks, tokens, topology
from supernode.core.request import KvHandle, Request, RequestStatus, Sampling
from supernode.core.scheduler import PrefillBatch, PrefillScheduler, QueueFullError
from supernode.core.scoring_jobs import TieredPrefillScheduler
from supernode.hw import cost as hw_cost
from supernode.hw import specs
from supernode.prefill import scoring
from supernode.prefill.queue_delay import QueueDelayBound
from supernode.runtime.clock import Clock
from supernode.runtime.config import Settings
from supernode.runtime.deployments import prefill_deployment
from supernode.runtime.early_first import OnFirstToken
from supernode.runtime.engine import HOST_DELAY_FLOOR_S, StepFailure, StepLoop
from supernode.runtime.errors import ResourceExhaustedError, SupernodeError, invalid
from supernode.runtime.peers import (
    DieLease,
    FabricClient,
    LoadSnapshot,
    PoolBlock,
    PoolClient,
    PrefillResult,
    ScoreResult,
)  # fmt: skip
from supernode.runtime.supervision import Supervisor
from supernode.runtime.worker_metrics import CacheMetrics, WorkerMetrics

log = logging.getLogger(__name__)
# The EMS pool spans every node's Kunpeng CPUs (reference 1.2, 2.3): blocks are placed by their key.
NUM_POOL_CPUS = topology.DEFAULT_NUM_NODES * topology.CPUS_PER_NODE
MAX_BACKGROUND_STORES = 1024  # bound on KV store transfers in flight; beyond it stores are not timed
OFFLOAD_MIN_TOKENS = 32_768  # longer prompts are hashed off the event loop (~25 us per 1K tokens)


class PrefillEngine:
    def __init__(
        self, settings: Settings, clock: Clock, fabric: FabricClient, pool: PoolClient,
        *, offload: bool = True, heartbeat: bool = True, num_pool_cpus: int = NUM_POOL_CPUS,
        early_first: bool = True,
    ) -> None:  # fmt: skip
        """`offload`: hash long prompts off the event loop, so RPCs and the step loop keep going (live);
        `heartbeat`: renew the die lease; `num_pool_cpus`: the CPUs the EMS pool spans (every node's:
        the fabric's node count x 4); `early_first`: offer each first token when the batch computing
        it starts, due when it ends, so the host's way back to the caller is not added to its time
        (live; on virtual time the way back takes no time, and the offer at the end is the same)."""
        self.cfg = settings.prefill
        self.block_tokens = settings.kvpool.block_tokens
        self.namespace = settings.kvpool.namespace
        self.max_blocks_per_call = settings.kvpool.max_blocks_per_call
        self.worker_id = self.cfg.worker_id or f"prefill-{self.cfg.port}"
        self.clock = clock
        self.fabric = fabric
        self.pool = pool
        self.offload = offload
        self.heartbeat = heartbeat
        self.num_pool_cpus = num_pool_cpus
        self.early_first = early_first
        self.deployment = prefill_deployment(self.cfg)
        num_dies = self.cfg.num_npus * self.deployment.dies_per_npu
        self.lease = DieLease(fabric, self.worker_id, "prefill", num_dies, settings.fabric.lease_ttl_s)
        self.scheduler: PrefillScheduler = scoring.make_scheduler(settings)  # with an XL3M scoring queue
        self.loop: StepLoop[PrefillBatch] = StepLoop(
            self.worker_id,
            clock,
            self.schedule,
            self.price,
            self.postprocess,
            on_failure=self._on_step_failure,
            ready_at=self._ready_at,
            on_planned=self._on_planned if early_first else None,
        )
        self._stores: set[asyncio.Future[object]] = set()  # KV stores moving over UB in the background
        self.metrics = WorkerMetrics("prefill", self.worker_id, self.cfg.num_npus)
        self.metrics.track_lag(self.loop.stats)
        self.supervisor = Supervisor("prefill", self.worker_id, self.metrics.registry)
        self.queue_delay = QueueDelayBound(
            self.deployment, self.scheduler.token_budget,
            self.cfg.max_queue_delay_s * settings.runtime.time_scale, settings.runtime.time_scale,
            self.metrics.registry, self.worker_id,
        )  # fmt: skip
        self.cache_metrics = CacheMetrics(self.metrics)
        self.scorer = scoring.Scorer(self, self.metrics.registry, self.worker_id)

    async def start(self) -> None:
        await self.lease.acquire(heartbeat=self.heartbeat)
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        if self._stores:
            await asyncio.wait(self._stores, timeout=5.0)
        await self.lease.release()

    # -- the step

    def schedule(self) -> PrefillBatch | None:
        batch = self.scheduler.schedule()
        if batch is None:  # idle: the gauges say so rather than keep the last batch's values
            self.metrics.on_idle()
            self._publish_queue()
        return batch

    def price(self, batch: PrefillBatch) -> hw_cost.Cost:
        """The cost model's time for computing `batch` (the vocabulary projection where it is needed:
        an interactive prompt's last position, a scoring job's question positions)."""
        return scoring.price(self.deployment, batch)

    def postprocess(self, batch: PrefillBatch, cost: hw_cost.Cost) -> None:
        duration_s = cost.total_us / 1e6
        self.scorer.on_batch(batch, cost)
        self.queue_delay.on_batch(batch.num_new_tokens, duration_s)
        self.metrics.on_step(
            len(batch.slices), len(batch.slices), duration_s, cost.breakdown_us, batch.num_new_tokens
        )
        for s in batch.slices:
            s.request.prefill_compute_s += duration_s
        for request in self.scheduler.postprocess(batch):
            request.advance(RequestStatus.FINISHED)
            request.finished_s = self.clock.now()
            if request.sink is not None:
                request.sink.on_done(request)
        self._publish_queue()

    def _on_planned(self, batch: PrefillBatch, end_s: float) -> None:
        """Offers the first token of every prompt `batch` completes, due at its end (`early_first`)."""
        for s in batch.slices:
            sink = s.request.sink
            if isinstance(sink, scoring.DoneSink) and sink.on_due is not None:
                if s.num_new == s.request.num_prefill_remaining:
                    sink.on_due(end_s)

    def _ready_at(self, batch: PrefillBatch) -> float:
        """The instant every prompt in `batch` was ready (a job with none set: now)."""
        now = self.clock.now()
        return max((s.request.ready_s or now) for s in batch.slices)

    def _publish_queue(self) -> None:
        self.metrics.on_queue(
            len(self.scheduler.waiting), self.scheduler.num_waiting_tokens, self.block_tokens,
            self.loop.stats.max_lag_s,
        )  # fmt: skip
        self.queue_delay.on_queue(self.scheduler.num_waiting_tokens)

    def _on_step_failure(self, failure: StepFailure) -> None:
        """The loop stopped: fail what waits on it and leave the rotation (runtime/supervision.py)."""
        scheduler = self.scheduler
        background = scheduler.background if isinstance(scheduler, TieredPrefillScheduler) else deque()
        self.supervisor.trip(failure, [*scheduler.waiting, *background])
        scheduler.waiting.clear()
        background.clear()
        scheduler.num_waiting_tokens = scheduler.num_running = 0
        self.metrics.on_idle()
        self._publish_queue()

    # -- requests

    async def prefill(
        self, request_id: str, prompt: Sequence[int], sampling: Sampling,
        on_first_token: OnFirstToken | None = None, sent_s: float = 0.0,
    ) -> PrefillResult:  # fmt: skip
        """Computes the prompt's KV (cache hits loaded, the rest batched); emulated times in the result.
        `on_first_token(token, due_s)` is called with the first token once the prompt is computed,
        before the new blocks are stored (the caller can answer it while the store runs); with
        `early_first`, also when the batch computing it starts, due when that batch ends. `sent_s`:
        when the router sent it (0: unknown); a batch on an idle worker starts when its prompts were
        ready, so the host's own work since (the hop, hashing, the pool lookup) is not emulated time."""
        self.supervisor.check()
        request = self._validate(request_id, prompt, sampling)
        if self.offload and len(prompt) > OFFLOAD_MIN_TOKENS:
            keys = await asyncio.to_thread(blocks.block_keys, prompt, self.block_tokens)
        else:  # a thread hop costs more than hashing a short prompt
            keys = blocks.block_keys(prompt, self.block_tokens)
        die = self._die_for(request_id)
        await self._load_cached(request, keys, die)
        # Ready when sent plus its modelled cache load: the host's hop, hashing and pool lookup are
        # not emulated time (runtime/engine.py's `ready_at`); a delay under a microsecond is none.
        sent = sent_s if 0 < sent_s <= request.arrival_s else request.arrival_s
        ready, now = sent + request.cache_load_s, self.clock.now()
        request.ready_s = ready if ready < now - HOST_DELAY_FLOOR_S else now
        first = tokens.next_token(prompt, sampling.seed)
        early = on_first_token if self.early_first else None
        done = scoring.DoneSink(None if early is None else lambda end_s: early(first, end_s))
        request.sink = done
        queued_at = self.clock.now()
        self.supervisor.check()  # the loop may have failed while the cache was looked up
        self.queue_delay.admit(self.scheduler.num_waiting_tokens)
        try:
            self.scheduler.add(request)
        except QueueFullError as err:
            raise ResourceExhaustedError(f"prefill queue full: {err}", retry_after_s=0.5) from err
        self.loop.wake()
        try:
            await done.future
        finally:
            if not request.is_done:
                self.scheduler.cancel(request)
                self._publish_queue()
        if request.status is RequestStatus.FAILED:
            raise self.supervisor.error()
        waited = request.finished_s - min(queued_at, request.ready_s) - request.prefill_compute_s
        request.prefill_queue_s = max(0.0, waited)
        if on_first_token is not None:
            on_first_token(first, 0.0)
        await self._store_blocks(prompt, keys, request.num_cached_tokens // self.block_tokens, die)
        kv = KvHandle(
            request_id, self.namespace, tuple(keys), len(prompt), len(prompt) * specs.KV_BYTES_PER_TOKEN,
            self.worker_id, die, self.block_tokens,
        )  # fmt: skip
        return PrefillResult(
            first, kv, request.num_cached_tokens, request.prefill_queue_s, request.cache_load_s,
            request.prefill_compute_s,
        )  # fmt: skip

    async def score(
        self, request_id: str, segment: list[int], question: list[int], score_fn: str
    ) -> ScoreResult:
        """An XL3M scoring job: prefill of segment + question at the scoring priority, no KV kept."""
        return await self.scorer.score(request_id, segment, question, score_fn)

    def load(self, draining: bool = False) -> LoadSnapshot:
        return LoadSnapshot(
            worker_id=self.worker_id,
            role="prefill",
            num_running=self.scheduler.num_running,
            num_waiting=len(self.scheduler.waiting),
            max_queue=self.cfg.max_queue,
            kv_tokens_used=self.scheduler.num_waiting_tokens,
            kv_tokens_capacity=self.scheduler.token_budget,
            draining=draining or self.supervisor.is_failed,
            num_dies=len(self.lease.dies),
        )

    # -- helpers

    def _validate(self, request_id: str, prompt: Sequence[int], sampling: Sampling) -> Request:
        if not request_id:
            raise invalid("request_id", "must not be empty")
        if not prompt:
            raise invalid("token_ids", "must hold at least one token")
        bad = tokens.first_invalid_token(prompt)
        if bad is not None:
            raise invalid("token_ids", f"token {bad} is outside the vocabulary [0, {tokens.VOCAB_SIZE})")
        return Request(request_id, prompt, 1, sampling, arrival_s=self.clock.now())

    def _die_for(self, request_id: str) -> int:
        """The die that computes (and holds) this request's KV."""
        digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
        return self.lease.die(int.from_bytes(digest, "little")).index

    async def _load_cached(self, request: Request, keys: list[str], die: int) -> None:
        """Looks the prompt's full blocks up and charges loading the cached prefix over UB."""
        prompt = request.prompt
        num_full = len(prompt) // self.block_tokens
        num_cached_blocks = await self.pool.lookup(keys[:num_full]) if num_full else 0
        # At least the last prompt token is computed, so a fully cached prompt still yields a token.
        num_cached = min(num_cached_blocks * self.block_tokens, len(prompt) - 1)
        request.num_cached_tokens = num_cached
        num_bytes = num_cached * specs.KV_BYTES_PER_TOKEN
        self.cache_metrics.on_lookup(
            len(prompt), num_cached, num_cached_blocks, num_full - num_cached_blocks, num_bytes
        )
        if num_cached:
            cpu = prefix_source(keys[:num_cached_blocks], request.request_id, self.num_pool_cpus)
            result = await self.fabric.transfer(("cpu", cpu), ("die", die), num_bytes, "ub", "kv-load")
            request.cache_load_s = result.duration_s

    async def _store_blocks(self, prompt: Sequence[int], keys: list[str], first_new: int, die: int) -> None:
        """Writes the new blocks to the pool; their UB move to the EMS DRAM pool runs in the background.

        The bytes land in the pool before the handle is returned (decode reads them next); the emulated
        UB write is not on the request's path, as in the paper's asynchronous store (reference 2.3),
        but it does occupy the fabric's links.
        """
        bt = self.block_tokens
        new = [PoolBlock(keys[i], prompt[i * bt : (i + 1) * bt]) for i in range(first_new, len(keys))]
        for start in range(0, len(new), self.max_blocks_per_call):
            await self.pool.put(new[start : start + self.max_blocks_per_call])
        num_tokens = sum(len(b.tokens) for b in new)
        if num_tokens and len(self._stores) < MAX_BACKGROUND_STORES:
            cpu = pool_cpu(keys[first_new], self.num_pool_cpus)
            store = self.fabric.start_transfer(
                ("die", die), ("cpu", cpu), num_tokens * specs.KV_BYTES_PER_TOKEN, "ub", "kv-store"
            )  # fmt: skip
            self._stores.add(store)
            store.add_done_callback(self._on_stored)

    def _on_stored(self, store: asyncio.Future[object]) -> None:
        self._stores.discard(store)
        if store.cancelled():
            return
        err = store.exception()
        if isinstance(err, SupernodeError):  # a store that cannot move is only a lost cache entry's timing
            log.debug("background KV store transfer failed: %s", err.message)
        elif err is not None:
            log.error("background KV store transfer failed", exc_info=err)


def prefix_source(keys: list[str], request_id: str, num_cpus: int = NUM_POOL_CPUS) -> int:
    """The EMS CPU a request reads its cached prefix from, as one transfer.

    Each block lives on the CPU its own key hashes to ([v3] §4.4.1: a DHT over the MP servers), so a
    prefix is spread over as many sockets as it has blocks. One transfer per block would cost the fabric
    a flow each; instead each request reads its whole prefix from one of its blocks' sockets, picked by
    the request: requests sharing a prefix then spread over the sockets holding it, and each socket's
    port carries about what the per-block reads would put on it (not every request on the first block's
    socket)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
    return pool_cpu(keys[int.from_bytes(digest, "little") % len(keys)], num_cpus)


def pool_cpu(block_key: str, num_cpus: int = NUM_POOL_CPUS) -> int:
    """The EMS CPU (of `num_cpus`) holding a block: block keys are uniform hashes, so their leading bits
    place them."""
    return int(block_key[:8], 16) % num_cpus
