"""The KV pool service (the paper's EMS): the only service that talks to Redis.

A block's life: a prefill worker `Put`s it (the pool derives the payload from its tokens and seals it
with a digest; content-addressed, so a block already present is not written again); `Lookup` tells
how many leading blocks of a prefix are present (context caching); decode `Get`s the blocks, the pool
verifies every digest and serves a corrupt block as missing; Redis's LRU cap evicts cold blocks.

The service is stateless: run several behind one Redis or Redis Cluster (`kvpool.redis_url`; the
store is chosen by `kvpool.redis_mode`) and give workers the list (`kvpool.addresses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterable

import grpc
from prometheus_client import CollectorRegistry

from supernode.core import blocks
from supernode.hw.specs import KV_BYTES_PER_TOKEN
from supernode.kvpool import frames, lookups
from supernode.kvpool.memory import keep_freed_memory
from supernode.kvpool.metrics import Counters, PoolMetrics
from supernode.kvpool.store import KvStore
from supernode.kvpool.stores import open_store
from supernode.kvpool.streamed import read_ahead
from supernode.kvpool.wire import GetReplyWriter, add_kvpool_to_server, packed_tokens
from supernode.runtime.config import Settings
from supernode.runtime.errors import invalid
from supernode.runtime.metrics import start_metrics_server
from supernode.runtime.server import Drain, stream, unary
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc

log = logging.getLogger(__name__)
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KvPoolService(kvpool_pb2_grpc.KvPoolServicer):
    service_names: tuple[str, ...] = (kvpool_pb2.DESCRIPTOR.services_by_name["KvPool"].full_name,)

    def __init__(self, settings: Settings, store: KvStore | None, drain: Drain) -> None:
        self.settings = settings
        self.cfg = settings.kvpool
        self._given_store = store
        self.store: KvStore  # opened in start()
        self.drain = drain
        self.counters: defaultdict[str, Counters] = defaultdict(Counters)
        self.counters[self.cfg.namespace] = Counters()  # exported (at zero) from start-up
        self.metrics = PoolMetrics(self.counters)
        self.registry = CollectorRegistry()
        self.registry.register(self.metrics)
        self._metrics_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Opens the store (standalone or cluster, per `redis_mode`), checks it answers, starts metrics."""
        self.store = self._given_store or await open_store(
            self.cfg.redis_url, self.cfg.redis_mode, self.cfg.failover_wait_s
        )
        await self.store.ping()
        # multi-MB replies reuse memory, not fresh pages; so may large blocks' frames (kvpool/frames.py)
        frames.enable(keep_freed_memory(self.cfg.kept_free_bytes))
        start_metrics_server(self.cfg.metrics_port, self.settings.runtime.bind_host, self.registry)
        refresh = self.metrics.refresh_forever(self.store)
        self._metrics_task = asyncio.create_task(refresh, name="kvpool-nodes")

    async def stop(self) -> None:
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        if hasattr(self, "store"):  # unset when start() failed to open it
            await self.store.close()

    @unary()
    async def Lookup(self, request: kvpool_pb2.LookupRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        namespace = self._namespace(request.namespace)
        keys = self._keys(request.block_keys, "block_keys")
        present = await self.store.exists_many(namespace, keys)
        num_cached = next((i for i, ok in enumerate(present) if not ok), len(present))
        counters = self.counters[namespace]
        counters.num_hits += num_cached
        counters.num_misses += len(keys) - num_cached
        return kvpool_pb2.LookupResponse(num_cached_blocks=num_cached)

    @unary()
    async def LookupMany(  # noqa: N802
        self, request: kvpool_pb2.LookupManyRequest, context: grpc.aio.ServicerContext
    ):
        namespace = self._namespace(request.namespace)
        given = request.prefixes
        prefixes = [self._keys(p.block_keys, f"prefixes[{i}].block_keys") for i, p in enumerate(given)]
        self._count(len(lookups.distinct_keys(prefixes)), "prefixes")
        runs, _ = await lookups.lookup_many(prefixes, lambda keys: self.store.exists_many(namespace, keys))
        counters = self.counters[namespace]
        counters.num_hits += sum(runs)
        counters.num_misses += sum(len(keys) for keys in prefixes) - sum(runs)
        return kvpool_pb2.LookupManyResponse(num_cached_blocks=runs)

    @unary()
    async def Put(self, request: kvpool_pb2.PutRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        namespace = self._namespace(request.namespace)
        self._count(len(request.blocks), "blocks")
        max_tokens = self.cfg.block_tokens
        sizes: dict[int, int] = {}  # payload bytes by token count
        items = []
        for i, block in enumerate(request.blocks):
            key = block.key
            if not blocks.is_block_key(key):
                raise invalid(f"blocks[{i}].key", "must be a 32-character lowercase hex block key")
            num_tokens = len(block.tokens)
            if not 1 <= num_tokens <= max_tokens:
                raise invalid(f"blocks[{i}].tokens", f"must hold 1..{max_tokens} tokens")
            size = sizes.get(num_tokens)
            if size is None:
                size = sizes[num_tokens] = self._payload_size(num_tokens)
            items.append((key, blocks.seal_encoded(key, num_tokens, packed_tokens(block), size)))
        written = await self.store.put_many(namespace, items)
        payload_bytes = sum(len(value) for (_, value), ok in zip(items, written, strict=True) if ok)
        self.counters[namespace].bytes_written += payload_bytes
        num_stored = sum(written)
        return kvpool_pb2.PutResponse(
            num_stored=num_stored, num_already_cached=len(items) - num_stored, payload_bytes=payload_bytes,
            stored=written,
        )  # fmt: skip

    @unary()
    async def Get(self, request: kvpool_pb2.GetRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        namespace = self._namespace(request.namespace)
        keys = self._keys(request.block_keys, "block_keys")
        values = await self.store.get_many(namespace, keys)
        wire = await self._reply(namespace, keys, values, request.with_payload)
        self.store.recycle(values)  # the reply is a copy: nothing refers to the values any more
        return wire

    @stream()
    async def GetStream(  # noqa: N802
        self, request: kvpool_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[bytes, None]:
        """`Get`'s answer in several messages, each group's Redis read overlapping the previous
        group's reply (kvpool/streamed.py)."""
        namespace = self._namespace(request.namespace)
        keys = self._keys(request.block_keys, "block_keys")
        get = functools.partial(self.store.get_many, namespace)
        async with contextlib.aclosing(read_ahead(keys, get, self.cfg.max_blocks_per_call)) as groups:
            async for group, values in groups:
                wire = await self._reply(namespace, group, values, request.with_payload)
                self.store.recycle(values)  # the message is a copy
                yield wire

    async def _reply(
        self, namespace: str, keys: list[str], values: list[bytes | None], with_payload: bool
    ) -> bytes:
        """The Get reply's wire bytes: each found block's digest verified, a corrupt one dropped."""
        counters = self.counters[namespace]
        reply = GetReplyWriter()  # wire bytes: each payload is copied once, from Redis's reply
        for key, value in zip(keys, values, strict=True):
            if value is None:
                counters.num_misses += 1
                reply.add_missing(key)
                continue
            try:
                opened = blocks.open_sealed(value)
            except blocks.CorruptBlockError as err:
                log.warning("block %s failed verification (%s); dropping it", key, err)
                counters.num_digest_failures += 1
                await self.store.delete(namespace, key)
                reply.add_missing(key)
                continue
            counters.num_hits += 1
            counters.bytes_read += len(value)
            nominal = opened.num_tokens * KV_BYTES_PER_TOKEN
            if with_payload and len(keys) == 1 and (message := frames.message(value, key, opened, nominal)):
                return message  # the block was read into this message's bytes: no join
            payload = opened.payload if with_payload else None
            reply.add(key, opened.encoded_tokens, nominal, payload)
        return reply.finish()

    @unary(track=False)
    async def Stats(self, request: kvpool_pb2.StatsRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        namespace = self._namespace(request.namespace)
        counters = self.counters[namespace]
        used, evicted = await self.store.memory_info()
        return kvpool_pb2.StatsResponse(
            num_hits=counters.num_hits,
            num_misses=counters.num_misses,
            bytes_written=counters.bytes_written,
            bytes_read=counters.bytes_read,
            num_keys=await self.store.num_keys(namespace),
            redis_used_memory=used,
            redis_evicted_keys=evicted,
            num_digest_failures=counters.num_digest_failures,
        )

    def _payload_size(self, num_tokens: int) -> int:
        return blocks.payload_size(num_tokens, KV_BYTES_PER_TOKEN, self.cfg.payload_ratio)

    def _namespace(self, namespace: str) -> str:
        if not namespace:
            return self.cfg.namespace
        if not _NAMESPACE_RE.match(namespace):
            raise invalid("namespace", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
        return namespace

    def _count(self, n: int, field: str) -> None:
        if n > self.cfg.max_blocks_per_call:
            raise invalid(field, f"at most {self.cfg.max_blocks_per_call} per call, got {n}")

    def _keys(self, keys: Iterable[str], field: str) -> list[str]:
        out = list(keys)
        self._count(len(out), field)
        bad = blocks.first_bad_block_key(out)
        if bad is not None:
            raise invalid(f"{field}[{bad}]", "must be a 32-character lowercase hex block key")
        return out


def build(
    settings: Settings, store: KvStore | None = None
) -> Callable[[grpc.aio.Server, Drain], KvPoolService]:
    """The host's factory: registers the servicer on a server (the store is opened at start unless given)."""

    def _build(server: grpc.aio.Server, drain: Drain) -> KvPoolService:
        service = KvPoolService(settings, store, drain)
        add_kvpool_to_server(service, server)
        return service

    return _build
