"""The router's view of its workers: one channel each, in-flight counts, and polled load reports."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc

from supernode.core.policy import WorkerSnapshot
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.v1 import common_pb2, decode_pb2_grpc, prefill_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Worker:
    address: str
    role: str
    channel: grpc.aio.Channel
    stub: object
    num_inflight: int = 0
    is_healthy: bool = True  # optimistic until a probe says otherwise
    load: common_pb2.LoadReport = field(default_factory=common_pb2.LoadReport)

    def snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            address=self.address,
            is_healthy=self.is_healthy,
            is_draining=self.load.draining,
            num_inflight=self.num_inflight,
            num_waiting=self.load.num_waiting,
            kv_tokens_used=self.load.kv_tokens_used,
            kv_tokens_capacity=self.load.kv_tokens_capacity if self.role == "decode" else 0,
        )


class WorkerSet:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefill = [self._open(a, "prefill") for a in settings.router.prefill_addresses]
        self.decode = [self._open(a, "decode") for a in settings.router.decode_addresses]
        self._task: asyncio.Task[None] | None = None

    def _open(self, address: str, role: str) -> Worker:
        channel = open_channel(address, self.settings)
        stub_cls = prefill_pb2_grpc.PrefillStub if role == "prefill" else decode_pb2_grpc.DecodeStub
        return Worker(address, role, channel, stub_cls(channel))

    @property
    def all(self) -> list[Worker]:
        return [*self.prefill, *self.decode]

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll_loop(), name="router-load-poll")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        for worker in self.all:
            await worker.channel.close()

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._probe(w) for w in self.all))

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.settings.router.load_poll_s)

    async def _probe(self, worker: Worker) -> None:
        try:
            worker.load = await worker.stub.Load(common_pb2.LoadRequest(), timeout=2.0)  # type: ignore[attr-defined]
            worker.is_healthy = True
        except grpc.RpcError as err:
            if worker.is_healthy:
                log.warning("%s %s unreachable: %s", worker.role, worker.address, err.code())
            worker.is_healthy = False
