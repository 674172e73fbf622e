"""Client channels: one per peer, with message limits, bounded reconnect backoff, and health waiting."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supernode.runtime.config import Settings
from supernode.runtime.retry import retry_options

# gRPC's default reconnect backoff grows to 120 s, so a worker back after an outage of tens of seconds
# went unused for ~10 s more. Bounded at 1 s (and DNS re-resolved as often, for a container that comes
# back on a new address), a returning peer is used within about a second.
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
]


def open_channel(address: str, settings: Settings) -> grpc.aio.Channel:
    limit = settings.runtime.max_message_bytes
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *retry_options(),  # gRPC retries idempotent calls on UNAVAILABLE (runtime.retry)
            *RECONNECT_OPTIONS,
        ],
    )


async def is_serving(channel: grpc.aio.Channel, timeout_s: float = 1.0) -> bool:
    """True when the peer's grpc.health.v1 says SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_serving(address: str, settings: Settings, timeout_s: float = 30.0) -> None:
    """Waits until the service at `address` is SERVING; raises TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with open_channel(address, settings) as channel:
        while asyncio.get_running_loop().time() < deadline:
            if await is_serving(channel):
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{address} not serving after {timeout_s:.0f} s")
