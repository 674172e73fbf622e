"""Block reads straight from the socket into their own buffers: the pool's `MGET` and `GET` script path.

redis-py reads a reply through an asyncio StreamReader (the socket's chunk, copied into the stream's
buffer, copied out of it, the remainder moved down) and hiredis (copied into its buffer, copied again
into the value): ~2.2 ms of CPU per MB of 9 MB blocks here, three times what reading them costs. Here
an `asyncio.BufferedProtocol` parses the reply's headers from a small buffer and hands the kernel each
large value's own buffer, so a payload is written once, by the kernel, where it stays (~0.6 ms per MB).

Scope: RESP2 replies that are one array of bulk strings, nils and integers (`MGET`, the `GET`
script), a status (`AUTH`) or one error; plain TCP, with the URL's user, password and database
(`rediss://` and unix sockets keep redis-py: `BulkClient.open` answers None). Errors are redis-py's
exception classes, so callers handle them as before: ConnectionError / TimeoutError for the
connection (retried once on a fresh connection, as the pool's redis-py clients are), ResponseError
and its subclasses for error replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions
from redis._parsers.base import BaseParser
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from supernode.kvpool import frames
from supernode.kvpool.resp import pack

_CHUNK_BYTES = 256 * 1024  # headers and small values are read through a buffer this size
_DIRECT_BYTES = 64 * 1024  # a value at least this large gets its own buffer, written by the kernel
MAX_CONNECTIONS = 16  # idle connections kept; more calls at once open (and then close) more
MAX_SPARE_BYTES = 256 * 1024 * 1024  # large-value buffers kept for reuse (`BulkClient.recycle`)
Reply = list[Any] | BaseException


class _ReplyReader(asyncio.BufferedProtocol):
    """Reads one reply at a time (the caller sends one command and awaits `reply`)."""

    def __init__(self, buffers: Buffers) -> None:
        self._buffers = buffers
        self._chunk = bytearray(_CHUNK_BYTES)
        self._buf = b""  # received, not yet parsed (from _pos)
        self._pos = 0
        self._values: list[Any] = []
        self._count = -2  # elements in the array being read; -2 = no header yet
        self._target: memoryview | None = None  # the large value's buffer being received into
        self._value: object = None  # what the reply holds for it (its buffer, or a view of a frame)
        self._filled = 0
        self._skip = 0  # bytes to drop (a large value's CRLF)
        self._waiter: asyncio.Future[Reply] | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.is_lost = False

    def expect(self) -> asyncio.Future[Reply]:
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        self._finish(redis.exceptions.ConnectionError(f"redis closed the connection ({exc})"))

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self._target is not None:
            return self._target[self._filled :]
        return self._chunk

    def buffer_updated(self, nbytes: int) -> None:
        if self._target is not None:
            self._filled += nbytes
            if self._filled < len(self._target):
                return
            self._values.append(self._value)
            self._target, self._value, self._skip = None, None, 2
            data = b""
        else:
            data = bytes(memoryview(self._chunk)[:nbytes])
        self._buf = self._buf[self._pos :] + data if self._pos < len(self._buf) else data
        self._pos = 0
        try:
            self._parse()
        except (ValueError, IndexError) as err:
            self._finish(redis.exceptions.ConnectionError(f"unreadable redis reply: {err}"))
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        buf, pos = self._buf, self._pos
        while True:
            if self._skip:
                step = min(self._skip, len(buf) - pos)
                pos, self._skip = pos + step, self._skip - step
                if self._skip:
                    break
            if self._count != -2 and len(self._values) == self._count:
                self._finish(self._values)
                break
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            kind, line, pos = buf[pos], buf[pos + 1 : end], end + 2
            if kind == 0x2D:  # -: an error (the whole reply, or an element)
                error = BaseParser.parse_error(line.decode(errors="replace"))
                if self._count == -2:
                    self._finish(error)
                    break
                self._values.append(error)
            elif self._count == -2 and kind == 0x2B:  # +: a status (AUTH, SELECT)
                self._finish([bytes(line)])
                break
            elif self._count == -2:
                if kind != 0x2A:  # *
                    raise ValueError(f"expected an array, got {bytes([kind])!r}")
                self._count = int(line)
                if self._count < 0:  # a nil array
                    self._count = 0
            elif kind == 0x3A:  # :
                self._values.append(int(line))
            elif kind == 0x24:  # $
                size = int(line)
                if size < 0:
                    self._values.append(None)
                elif len(buf) - pos >= size + 2 or size < _DIRECT_BYTES:
                    if len(buf) - pos < size + 2:
                        pos -= len(line) + 3  # wait for the rest of this small value
                        break
                    self._values.append(buf[pos : pos + size])
                    pos += size + 2
                else:
                    if len(buf) - pos < frames.HEAD_BYTES:
                        pos -= len(line) + 3  # its buffer is chosen from its first bytes: wait for them
                        break
                    value, target = self._buffers.take(size, buf[pos : pos + frames.HEAD_BYTES])
                    have = min(size, len(buf) - pos)
                    target[:have] = memoryview(buf)[pos : pos + have]
                    pos += have
                    if have == size:
                        self._values.append(value)
                        self._skip = 2
                        continue
                    self._target, self._value, self._filled = target, value, have
                    break
            else:
                raise ValueError(f"unexpected reply element {bytes([kind])!r}")
        self._buf, self._pos = buf, pos

    def _finish(self, reply: Reply) -> None:
        self._values, self._count = [], -2
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reply)


class Buffers:
    """Where large values are received. A sealed block, when `room_for` gives it room, goes into a
    fresh frame (`frames.py`: the bytes of the one-block message that will serve it, the malloc'd
    memory reused by the allocator); any other value into a buffer handed back by the caller, reused
    by size: a fresh 9 MB buffer costs the kernel ~2,300 page faults, zeroed pages included, about
    as much CPU as receiving into it."""

    def __init__(self, room_for: Callable[[bytes, int], int | None] | None = None) -> None:
        self._spare: dict[int, list[bytearray]] = {}
        self._bytes = 0
        self._room_for = room_for

    def take(self, size: int, head: bytes = b"") -> tuple[object, memoryview]:
        """(the value the reply holds, a writable view of its `size` bytes) for a value starting `head`."""
        room = self._room_for(head, size) if self._room_for is not None else None
        if room is not None:
            return frames.new_frame(size, room)
        spare = self._spare.get(size)
        if spare:
            self._bytes -= size
            buffer = spare.pop()
        else:
            buffer = bytearray(size)
        return buffer, memoryview(buffer)

    def recycle(self, values: Sequence[object]) -> None:
        """Values of earlier replies the caller is done with (nothing refers to them any more): their
        buffers may receive later values."""
        for value in values:
            if type(value) is bytearray and len(value) >= _DIRECT_BYTES:
                self.give(value)

    def give(self, buffer: bytearray) -> None:
        if self._bytes + len(buffer) <= MAX_SPARE_BYTES:
            self._spare.setdefault(len(buffer), []).append(buffer)
            self._bytes += len(buffer)


class _Connection:
    def __init__(self, transport: asyncio.Transport, reader: _ReplyReader) -> None:
        self.transport, self.reader = transport, reader

    async def call(self, command: list[bytes | memoryview], timeout_s: float) -> list[Any]:
        reply = self.reader.expect()
        self.transport.writelines(command)
        try:
            result = await asyncio.wait_for(reply, timeout_s)
        except TimeoutError:
            self.transport.close()
            raise redis.exceptions.TimeoutError("timeout reading from redis") from None
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        self.transport.close()


class BulkClient:
    """Sends array-reply commands over its own connections to one Redis node (see the module doc)."""

    def __init__(
        self,
        host: str,
        port: int,
        setup: list[list[bytes | memoryview]],
        timeout_s: float,
        connect_s: float,
        buffers: Buffers | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._setup = setup  # AUTH / SELECT, sent on each new connection
        self._timeout_s, self._connect_s = timeout_s, connect_s
        self._idle: list[_Connection] = []
        self.buffers = buffers or Buffers()  # clients of one store may share theirs

    @classmethod
    def open(cls, url: str, timeout_s: float, connect_s: float) -> BulkClient | None:
        """A client for the node of a redis:// URL; None for TLS or a unix socket (left to redis-py)."""
        return cls.for_node(dict(parse_url(url)), timeout_s, connect_s)

    @classmethod
    def for_node(
        cls, options: dict[str, Any], timeout_s: float, connect_s: float, buffers: Buffers | None = None
    ) -> BulkClient | None:
        """A client from redis-py connection options (host, port, username, password, db, ...)."""
        if options.get("connection_class") in (SSLConnection, UnixDomainSocketConnection):
            return None
        setup = []
        if options.get("password") is not None:
            user = [options["username"]] if options.get("username") else []
            setup.append(pack(["AUTH", *user, options["password"]]))
        if int(options.get("db") or 0):
            setup.append(pack(["SELECT", int(options["db"])]))
        host, port = options.get("host", "localhost"), int(options.get("port", 6379))
        return cls(host, port, setup, timeout_s, connect_s, buffers)

    async def call(self, *args: Any) -> list[Any]:
        """The reply of one command: a list of values (bytes or bytearray, None, int; an error element
        as its exception). Raises the reply's error, or ConnectionError / TimeoutError."""
        command = pack(args)
        for attempt in (0, 1):
            connection = self._idle.pop() if self._idle else None
            while connection is not None and connection.reader.is_lost:
                connection = self._idle.pop() if self._idle else None
            try:
                if connection is None:
                    connection = await self._connect()
                result = await connection.call(command, self._timeout_s)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as err:
                if connection is not None:
                    connection.close()
                if attempt or isinstance(err, redis.exceptions.TimeoutError):
                    if isinstance(err, redis.exceptions.RedisError):
                        raise
                    raise redis.exceptions.ConnectionError(f"redis {self.host}:{self.port}: {err}") from err
                continue  # a stale connection (a restarted Redis): once more on a fresh one
            except BaseException:
                if connection is not None:
                    connection.close()  # cancelled mid-reply: the connection's state is unknown
                raise
            if len(self._idle) < MAX_CONNECTIONS:
                self._idle.append(connection)
            else:
                connection.close()
            return result
        raise AssertionError("unreachable")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            transport, reader = await asyncio.wait_for(
                loop.create_connection(lambda: _ReplyReader(self.buffers), self.host, self.port),
                self._connect_s,
            )
        except TimeoutError:
            raise redis.exceptions.TimeoutError(f"timeout connecting to {self.host}:{self.port}") from None
        connection = _Connection(transport, reader)
        for command in self._setup:
            await connection.call(command, self._timeout_s)  # an error reply (bad password) raises
        return connection

    def recycle(self, values: Sequence[object]) -> None:
        self.buffers.recycle(values)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
