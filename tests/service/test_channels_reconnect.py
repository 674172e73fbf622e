"""A peer that comes back after an outage is used again within about a second (bounded backoff)."""

from __future__ import annotations

import asyncio

from supernode.runtime.channels import is_serving, open_channel
from supernode.runtime.server import ServiceHost
from tests.conftest import free_port, make_settings
from tests.service.test_router import Fake

# With gRPC's default backoff (1 s growing 1.6x per attempt, to 120 s) the attempts after a peer
# vanishes come at about 1, 2.6, 5.2, 9.3 and 15.8 s: a peer back at 10.5 s waits ~5 s more.
OUTAGE_S = 10.5


async def start_host(port: int) -> ServiceHost:
    host = ServiceHost(make_settings(), lambda server, drain: Fake(None, None), port)
    await host.start()
    return host


async def test_returning_peer_is_used_within_about_a_second():
    port = free_port()
    host = await start_host(port)
    channel = open_channel(f"127.0.0.1:{port}", make_settings())
    try:
        assert await is_serving(channel)
        await host.drain_and_stop()
        loop = asyncio.get_running_loop()
        gone_at = loop.time()
        while loop.time() < gone_at + OUTAGE_S:  # callers keep failing fast while it is away
            assert not await is_serving(channel, 0.2)
            await asyncio.sleep(0.3)
        host = await start_host(port)
        back_at = loop.time()
        while loop.time() < back_at + 10:
            if await is_serving(channel, 0.2):
                break
            await asyncio.sleep(0.05)
        assert loop.time() - back_at < 2.0, f"used again {loop.time() - back_at:.1f} s after it returned"
    finally:
        await channel.close()
        await host.drain_and_stop()
