"""bench_kvpool's full-size payload figures: the pool's `GetStream` and `Get` against a raw gRPC copy.

One pool service on the standalone Redis (payload ratio 1.0: about 9 MB a block, FULL_BLOCKS_PER_CALL
blocks a call) and the copy server (`python -m benchmarks.kvpool_payload --copy-server PORT`: a process
holding the same bytes in memory) run side by side, and the four reads (pool streamed, copy streamed,
pool unary, copy unary) take turns call by call, so load from elsewhere on a shared machine falls on
all of them alike. The figures' meanings are in bench_kvpool's docstring.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

from benchmarks.kvpool_setup import (
    BLOCK_TOKENS,
    FULL_BLOCKS_PER_CALL,
    FULL_CALLS,
    fresh_blocks,
    pool_services,
)
from supernode.core import blocks
from supernode.hw.specs import KV_BYTES_PER_TOKEN
from supernode.kvpool.memory import keep_freed_memory
from supernode.processes import cpu_s, free_port, terminate
from supernode.runtime.channels import open_channel
from supernode.runtime.config import Settings
from supernode.v1 import kvpool_pb2, kvpool_pb2_grpc


async def _unary_bytes(call: Callable[[], Awaitable[kvpool_pb2.GetResponse]]) -> int:
    """One unary call's payload bytes (its reply decoded as `_stream_bytes` decodes each message)."""
    return sum(len(b.payload) for b in (await call()).blocks)


async def _stream_bytes(call: Callable[[], AsyncIterable[kvpool_pb2.GetResponse]]) -> int:
    """One streamed call's payload bytes, message by message."""
    return sum([sum(len(b.payload) for b in reply.blocks) async for reply in call()])


Read = Callable[[], Awaitable[int]]  # one call; its payload bytes


async def _interleaved(
    reads: dict[str, tuple[Read, list[Callable[[], float]]]],
) -> dict[str, tuple[float, list[float]]]:
    """{name: (MB/s, CPU ms per MB of each of its `cpus` readers)} of FULL_CALLS calls of each read
    (after one more), the reads taking turns call by call: on a shared machine, load that comes and
    goes falls on the pool and on the raw copy alike, so their ratio holds where each figure drifts."""
    for read, _ in reads.values():
        await read()
    num_bytes = dict.fromkeys(reads, 0)
    seconds = dict.fromkeys(reads, 0.0)
    spent = {name: [0.0] * len(cpus) for name, (_, cpus) in reads.items()}
    for _ in range(FULL_CALLS):
        for name, (read, cpus) in reads.items():
            cpu_before, started = [cpu() for cpu in cpus], time.monotonic()
            num_bytes[name] += await read()
            seconds[name] += time.monotonic() - started
            spent[name] = [s + cpu() - b for s, cpu, b in zip(spent[name], cpus, cpu_before, strict=True)]
    return {
        name: (num_bytes[name] / seconds[name] / 1e6, [s * 1e9 / num_bytes[name] for s in spent[name]])
        for name in reads
    }


async def _payload_mb_per_s(
    address: str, copy_address: str, cpus: list[Callable[[], float]], copy_cpu: Callable[[], float]
) -> dict[str, tuple[float, list[float]]]:
    """{"stream" | "unary" | "copy_stream" | "copy_unary": (MB/s, CPU ms per MB of each reader)} of
    full-size reads through the pool (`cpus`: service, Redis) and from the raw copy server, interleaved."""
    async with open_channel(address, Settings()) as channel, open_channel(copy_address, Settings()) as copy:
        stub = kvpool_pb2_grpc.KvPoolStub(channel)
        batch = fresh_blocks(FULL_BLOCKS_PER_CALL)
        put = await stub.Put(kvpool_pb2.PutRequest(blocks=batch), timeout=300)
        if put.num_stored != len(batch):  # a key stored before (at another size) would skew the figure
            raise RuntimeError(f"full-size blocks not stored: {put.num_stored} of {len(batch)}")
        request = kvpool_pb2.GetRequest(block_keys=[b.key for b in batch], with_payload=True)
        unary = functools.partial(stub.Get, request, timeout=60)
        streamed = functools.partial(stub.GetStream, request, timeout=60)
        decode = kvpool_pb2.GetResponse.FromString
        get: grpc.aio.UnaryUnaryMultiCallable[bytes, kvpool_pb2.GetResponse] = copy.unary_unary(
            "/bench.Copy/Get", response_deserializer=decode
        )
        stream: grpc.aio.UnaryStreamMultiCallable[bytes, kvpool_pb2.GetResponse] = copy.unary_stream(
            "/bench.Copy/Stream", response_deserializer=decode
        )
        copy_unary = functools.partial(get, b"", timeout=60)
        copy_streamed = functools.partial(stream, b"", timeout=60)
        return await _interleaved(
            {
                "stream": (lambda: _stream_bytes(streamed), cpus),
                "copy_stream": (lambda: _stream_bytes(copy_streamed), [copy_cpu]),
                "unary": (lambda: _unary_bytes(unary), cpus),
                "copy_unary": (lambda: _unary_bytes(copy_unary), [copy_cpu]),
            }
        )


def _full_call_messages() -> list[bytes]:
    """What a full-size GetStream returns, as wire bytes: one message per block of full payload
    (joined, the bytes of the unary Get's reply: FULL_BLOCKS_PER_CALL blocks)."""
    size = blocks.payload_size(BLOCK_TOKENS, KV_BYTES_PER_TOKEN, 1.0)
    out = []
    for block in fresh_blocks(FULL_BLOCKS_PER_CALL):
        reply = kvpool_pb2.GetResponse()
        reply.blocks.add(key=block.key, tokens=block.tokens, payload=os.urandom(size), nominal_bytes=size)
        out.append(reply.SerializeToString())
    return out


async def _serve_copy(port: int, messages: list[bytes]) -> None:
    """A gRPC server returning bytes it holds in memory: `Get` all `messages` as one reply (their
    concatenation is one valid message), `Stream` them one by one."""
    data = b"".join(messages)

    async def stream(request: bytes, context: object) -> AsyncIterator[bytes]:
        for message in messages:
            yield message

    handler = grpc.method_handlers_generic_handler(
        "bench.Copy",
        {
            "Get": grpc.unary_unary_rpc_method_handler(lambda req, ctx: data),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    limit = Settings().runtime.max_message_bytes
    server = grpc.aio.server(
        options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def payload_figures(url: str, redis_pid: int, workdir: Path) -> dict[str, float]:
    """The full-size figures: one pool service on `url` and the raw copy server, read in turns."""
    figures = {}
    copy_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.kvpool_payload", "--copy-server", str(copy_port)]
    )
    try:
        asyncio.run(_wait_port(copy_port))
        with pool_services(url, 1, 1.0, workdir) as (full, procs):
            service_pid, copy_pid = procs[0].pid, server.pid
            cpus = [lambda: cpu_s(service_pid), lambda: cpu_s(redis_pid)]
            copy_address = f"127.0.0.1:{copy_port}"
            payload = asyncio.run(_payload_mb_per_s(full[0], copy_address, cpus, lambda: cpu_s(copy_pid)))
    finally:
        terminate(server, 10)
    for kind, prefix in (("stream", "kvpool_payload"), ("unary", "kvpool_payload_unary")):
        mb_per_s, (service_ms, redis_ms) = payload[kind]
        figures[f"{prefix}_mb_per_s"] = mb_per_s
        figures[f"{prefix}_service_cpu_ms_per_mb"] = service_ms
        figures[f"{prefix}_redis_cpu_ms_per_mb"] = redis_ms
    figures["kvpool_payload_server_cpu_ms_per_mb"] = sum(payload["stream"][1])
    for kind in ("unary", "stream"):
        mb_per_s, (copy_ms,) = payload[f"copy_{kind}"]
        figures[f"grpc_{kind}_copy_mb_per_s"] = mb_per_s
        figures[f"grpc_{kind}_copy_server_cpu_ms_per_mb"] = copy_ms
    return figures


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("copy server did not start")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--copy-server":
        # The same allocator setting as the pool service (kvpool/memory.py), so the ratio compares the
        # servers' work per byte and not one's page faults against the other's reuse.
        keep_freed_memory(Settings().kvpool.kept_free_bytes)
        asyncio.run(_serve_copy(int(sys.argv[2]), _full_call_messages()))
