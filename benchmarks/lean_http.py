"""A lean HTTP/1.1 client for bursts: one POST per connection over asyncio streams, the response's
status, and its SSE `data:` lines as they arrive.

`make chaos`'s overload sends hundreds of streams at once from the same two cores as the stack it
measures. Through httpx each request costs the load generator milliseconds of CPU to open and close
(its connection pool, request and response models), so during the burst the generator's own event
loop falls behind by a second or more, and that shows up in the first-token times it measures as if
the server had been slow. This client does only what the wire needs: it writes the request with
`Connection: close`, reads the status line and headers, then the body (chunked or not), and splits
it into lines. It is not a general client: no TLS, redirects, keep-alive or compression.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

MAX_HEADER_LINES = 100


async def post_sse(
    host: str, port: int, path: str, body: dict[str, Any], on_data: Callable[[str], bool]
) -> int:
    """POSTs `body` as JSON and returns the response's status. For a 200, `on_data(payload)` gets
    each `data:` line's payload in order until it returns True or the body ends; other statuses'
    bodies are read and dropped."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode() + payload)
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {status_line[:80]!r}")
        status = int(parts[1])
        headers = await _headers(reader)
        pieces = _body(reader, headers)
        if status != 200:
            async for _ in pieces:
                pass
            return status
        rest = b""
        async for piece in pieces:
            *lines, rest = (rest + piece).split(b"\n")
            for line in lines:
                if line.startswith(b"data:") and on_data(line[5:].strip().decode()):
                    return status
        return status
    finally:
        writer.close()


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ConnectionError(f"more than {MAX_HEADER_LINES} header lines")


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)  # the chunk's CRLF
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length):
            yield await reader.readexactly(int(length))
        return
    while piece := await reader.read(65536):
        yield piece
