"""The gRPC implementations of the peer Protocols (runtime/peers.py) that live services plug in.

Every call has a timeout; failures surface as domain errors (runtime/errors.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import grpc

from supernode.core.request import KvHandle, Sampling
from supernode.runtime import codec
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.runtime.early_first import OnFirstToken
from supernode.runtime.errors import InternalError, from_rpc_error
from supernode.runtime.peers import (
    DecodeChunk,
    Die,
    LoadSnapshot,
    PoolBlock,
    PoolRead,
    PrefillResult,
    Reservation,
    ScoreResult,
    TransferResult,
)
from supernode.v1 import (
    common_pb2,
    decode_pb2,
    decode_pb2_grpc,
    fabric_pb2,
    fabric_pb2_grpc,
    kvpool_pb2,
    kvpool_pb2_grpc,
    prefill_pb2,
    prefill_pb2_grpc,
)

_KINDS = {"die": fabric_pb2.ENDPOINT_KIND_DIE, "cpu": fabric_pb2.ENDPOINT_KIND_CPU}
_PLANES = {"ub": fabric_pb2.PLANE_UB, "rdma": fabric_pb2.PLANE_RDMA, "vpc": fabric_pb2.PLANE_VPC}


async def _call(rpc: Any, request: object, timeout_s: float | None) -> Any:
    try:
        return await rpc(request, timeout=timeout_s)
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


class GrpcFabricClient:
    def __init__(self, settings: Settings) -> None:
        self._channel = open_channel(settings.fabric.address, settings)
        self._stub = fabric_pb2_grpc.FabricStub(self._channel)
        self._timeout = settings.runtime.rpc_timeout_s

    async def lease(self, worker_id: str, role: str, num_dies: int) -> list[Die]:
        request = fabric_pb2.LeaseRequest(worker_id=worker_id, role=role, num_dies=num_dies)
        reply = await _call(self._stub.Lease, request, self._timeout)
        return [codec.die_from_pb(d) for d in reply.dies]

    async def renew(self, worker_id: str) -> int:
        reply = await _call(self._stub.Renew, fabric_pb2.RenewRequest(worker_id=worker_id), self._timeout)
        return int(reply.num_dies)

    async def release(self, worker_id: str) -> None:
        await _call(self._stub.Release, fabric_pb2.ReleaseRequest(worker_id=worker_id), self._timeout)

    async def transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> TransferResult:
        request = fabric_pb2.TransferRequest(
            src=fabric_pb2.Endpoint(kind=_KINDS[src[0]], index=src[1]),
            dst=fabric_pb2.Endpoint(kind=_KINDS[dst[0]], index=dst[1]),
            num_bytes=num_bytes,
            plane=_PLANES[plane],
            tag=tag,
        )
        # Transfers take emulated time; the fabric answers when done, so no short timeout here.
        reply = await _call(self._stub.Transfer, request, self._timeout * 10)
        return TransferResult(reply.start_s, reply.finish_s)

    def start_transfer(
        self, src: tuple[str, int], dst: tuple[str, int], num_bytes: int, plane: str, tag: str
    ) -> asyncio.Future[object]:
        """The Transfer RPC in a task of its own."""
        return asyncio.ensure_future(self.transfer(src, dst, num_bytes, plane, tag))

    async def close(self) -> None:
        await self._channel.close()


class GrpcPoolClient:
    def __init__(self, settings: Settings) -> None:
        self._channel = open_channel(settings.kvpool.address, settings)
        self._stub = kvpool_pb2_grpc.KvPoolStub(self._channel)
        self._timeout = settings.runtime.rpc_timeout_s
        self.namespace = settings.kvpool.namespace

    async def lookup(self, keys: Sequence[str]) -> int:
        request = kvpool_pb2.LookupRequest(namespace=self.namespace, block_keys=list(keys))
        reply = await _call(self._stub.Lookup, request, self._timeout)
        return int(reply.num_cached_blocks)

    async def put(self, blocks: Sequence[PoolBlock]) -> int:
        return sum(await self.put_each(blocks))

    async def lookup_many(self, prefixes: Sequence[Sequence[str]]) -> list[int]:
        """How many leading keys of each prefix are stored, in one round trip."""
        lookups = [kvpool_pb2.LookupRequest(block_keys=keys) for keys in prefixes]
        request = kvpool_pb2.LookupManyRequest(namespace=self.namespace, prefixes=lookups)
        reply = await _call(self._stub.LookupMany, request, self._timeout)
        return list(reply.num_cached_blocks)

    async def put_each(self, blocks: Sequence[PoolBlock]) -> list[bool]:
        """Stores the blocks; per block, True when it was written now (False: already present)."""
        msgs = [kvpool_pb2.Block(key=b.key, tokens=b.tokens) for b in blocks]
        request = kvpool_pb2.PutRequest(namespace=self.namespace, blocks=msgs)
        reply = await _call(self._stub.Put, request, self._timeout)
        return list(reply.stored)

    async def get(self, keys: Sequence[str]) -> PoolRead:
        request = kvpool_pb2.GetRequest(namespace=self.namespace, block_keys=list(keys))
        reply = await _call(self._stub.Get, request, self._timeout)
        return PoolRead([list(b.tokens) for b in reply.blocks], list(reply.missing_keys))

    async def close(self) -> None:
        await self._channel.close()


class GrpcPrefillPeer:
    """A prefill instance behind its gRPC service."""

    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self._channel = open_channel(address, settings)
        self._stub = prefill_pb2_grpc.PrefillStub(self._channel)
        scale = settings.runtime.time_scale  # the bounds are emulated seconds; gRPC's are wall
        self._timeout = settings.router.prefill_timeout_s / scale  # the router gives up sooner when it must
        self._score_timeout = settings.router.score_timeout_s / scale
        self._unary_only = False  # set when the instance has no PrefillStream

    async def prefill(
        self, request_id: str, prompt: Sequence[int], sampling: Sampling,
        on_first_token: OnFirstToken | None = None, sent_s: float = 0.0,
    ) -> PrefillResult:  # fmt: skip
        """One PrefillStream call: the first token as soon as it is computed, then the reply. An
        instance without that method (an older build) is asked with the unary Prefill from then on."""
        request = prefill_pb2.PrefillRequest(
            request_id=request_id, token_ids=prompt, sampling=codec.sampling_to_pb(sampling), sent_s=sent_s
        )
        if self._unary_only:
            return _prefill_result(await _call(self._stub.Prefill, request, self._timeout))
        call = self._stub.PrefillStream(request, timeout=self._timeout)
        try:
            async for event in call:
                if event.WhichOneof("event") == "first_token":
                    if on_first_token is not None:
                        on_first_token(event.first_token, event.first_token_due_s)
                    continue
                return _prefill_result(event.response)
        except grpc.RpcError as err:
            if err.code() is not grpc.StatusCode.UNIMPLEMENTED:
                raise from_rpc_error(err) from err
            self._unary_only = True
            return _prefill_result(await _call(self._stub.Prefill, request, self._timeout))
        finally:
            call.cancel()  # a caller that left takes the request out of the prefill queue now
        raise InternalError("prefill: the stream ended without a response")

    async def score(
        self, request_id: str, segment: Sequence[int], question: Sequence[int], score_fn: str
    ) -> ScoreResult:
        request = prefill_pb2.ScoreRequest(
            request_id=request_id, segment_ids=segment, question_ids=question, score_fn=score_fn
        )
        reply = await _call(self._stub.Score, request, self._score_timeout)
        return ScoreResult(reply.score, reply.compute_s, reply.queue_s)

    async def load(self) -> LoadSnapshot:
        return codec.load_from_pb(await _call(self._stub.Load, common_pb2.LoadRequest(), 2.0))

    async def close(self) -> None:
        await self._channel.close()


def _prefill_result(reply: prefill_pb2.PrefillResponse) -> PrefillResult:
    return PrefillResult(
        reply.first_token, codec.kv_from_pb(reply.kv), reply.num_cached_tokens, reply.queue_s,
        reply.load_s, reply.compute_s,
    )  # fmt: skip


class GrpcDecodePeer:
    """A decode instance behind its gRPC service."""

    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self._channel = open_channel(address, settings)
        self._stub = decode_pb2_grpc.DecodeStub(self._channel)
        self._timeout = settings.router.call_timeout_s

    async def reserve(self, request_id: str, num_prompt_tokens: int, max_tokens: int) -> Reservation:
        request = decode_pb2.ReserveRequest(
            request_id=request_id, num_prompt_tokens=num_prompt_tokens, max_tokens=max_tokens
        )
        reply = await _call(self._stub.Reserve, request, self._timeout)
        return Reservation(reply.reservation_id, reply.dp_rank, codec.die_from_pb(reply.die))

    async def cancel_reservation(self, reservation_id: str) -> bool:
        request = decode_pb2.CancelReservationRequest(reservation_id=reservation_id)
        return bool((await _call(self._stub.CancelReservation, request, self._timeout)).cancelled)

    async def decode(
        self,
        reservation_id: str,
        kv: KvHandle,
        first_token: int,
        max_tokens: int,
        sampling: Sampling,
        num_resumed: int = 0,
    ) -> AsyncGenerator[DecodeChunk, None]:
        request = decode_pb2.DecodeRequest(
            reservation_id=reservation_id, kv=codec.kv_to_pb(kv), first_token=first_token,
            max_tokens=max_tokens, sampling=codec.sampling_to_pb(sampling), num_resumed_tokens=num_resumed,
        )  # fmt: skip
        call = self._stub.Decode(request)
        try:
            async for c in call:
                yield DecodeChunk(
                    list(c.token_ids), len(c.token_ids), c.kv_pull_s, c.finished, c.finish_reason, c.num_steps
                )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            call.cancel()  # a client that went away frees its decode slot now, not at garbage collection

    async def load(self) -> LoadSnapshot:
        return codec.load_from_pb(await _call(self._stub.Load, common_pb2.LoadRequest(), 2.0))

    async def close(self) -> None:
        await self._channel.close()
