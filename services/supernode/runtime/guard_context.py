"""What the router's guard (runtime/guard.py) wraps around a call: the request id a request travels
under inside the system (the client's, made unique) with the chunks written back carrying the
client's again, and for a chunked upload (`Router.GenerateUpload`) its header's id checked as it
arrives and an `abort` that reads what the client is still sending first, so a refused client sees
why."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from supernode.runtime.errors import check_request_id

# At most this many messages are read from a refused upload (see DrainingContext).
MAX_DRAINED_MESSAGES = 100_000
INTERNAL_ID_SUFFIX_CHARS = 13  # what `internal_id` adds: "." + 12 hex digits


def internal_id(client_id: str) -> str:
    """The id a request travels under inside the system: the client's, made unique (a reused id must
    not collide with a concurrent request's decode reservation)."""
    return f"{client_id}.{uuid.uuid4().hex[:12]}"


class ClientIdContext:
    """The servicer context, except that written chunks carry the client's request id again (none
    set: as written)."""

    def __init__(self, context: grpc.aio.ServicerContext, client_id: str = "") -> None:
        self._context = context
        self.client_id = client_id

    async def write(self, message: Any) -> None:
        if self.client_id:
            message.request_id = self.client_id
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class DrainingContext:
    """An upload's servicer context whose `abort` first reads what the client is still sending.

    grpc.aio reports a client's write to a call that has already ended as INTERNAL ("Internal error
    from Core") in place of the call's status, so a client still streaming its prompt would not see
    why it was refused (a full router, a bad header, a bad chunk). The rest is read and dropped (no
    spooling, at most `MAX_DRAINED_MESSAGES`), then the call ends with its real status."""

    def __init__(self, context: grpc.aio.ServicerContext, messages: AsyncIterator[Any]) -> None:
        self._context = context
        self._messages = messages

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        num_read = 0
        try:
            async for _ in self._messages:
                num_read += 1
                if num_read >= MAX_DRAINED_MESSAGES:
                    break
        except Exception:  # noqa: BLE001 - a broken stream only ends the drain; the status still goes
            pass
        await self._context.abort(code, details, trailing_metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class UploadIds(ClientIdContext):
    """An upload's messages as they arrive, its header's request id checked and made unique, and
    the servicer context whose written chunks carry the client's id again."""

    def __init__(self, messages: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        super().__init__(context)
        self._messages = messages

    async def messages(self) -> AsyncIterator[Any]:
        async for message in self._messages:
            if message.WhichOneof("part") == "header" and message.header.request_id:
                self.client_id = message.header.request_id
                check_request_id(self.client_id)  # INVALID_ARGUMENT naming request_id
                message.header.request_id = internal_id(self.client_id)
            yield message
