"""Cutting off a server stream whose client stopped reading.

A gRPC server stream buffers what its client has not read up to the HTTP/2 flow-control window; once
that is full, a write waits for the client. A write that waits longer than
`runtime.stream_stall_timeout_s` wall seconds ends the stream with RESOURCE_EXHAUSTED (the client's
buffer is full and it is not taking from it), which closes the handler's generator and so everything
it holds: for `Router.Generate` the decode stream, its slot and its KV, for `Decode.Decode` the
sequence's slot. Counted in `supernode_stalled_streams_total{where}` (the process's default registry)
with a rate-limited WARNING line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from prometheus_client import Counter

from supernode.runtime.admission import ShedLog
from supernode.runtime.errors import ResourceExhaustedError

STALLED_TOTAL = Counter(
    "supernode_stalled_streams", "Server streams cut off because the client stopped reading.", ("where",)
)
_logs: dict[str, ShedLog] = {}


async def write_or_cut(context: grpc.aio.ServicerContext, item: Any, stall_s: float, where: str) -> None:
    """Writes `item`; raises ResourceExhaustedError when the write waits more than `stall_s`."""
    try:
        async with asyncio.timeout(stall_s):
            await context.write(item)
    except TimeoutError:
        STALLED_TOTAL.labels(where).inc()
        message = f"stream: the client read nothing for {stall_s:g}s with its buffer full; cut off"
        _logs.setdefault(where, ShedLog(f"{where} (stalled readers)")).on_shed("stalled", message)
        raise ResourceExhaustedError(message, retry_after_s=1.0) from None
