"""What the router's guard (runtime/guard.py) wraps around a call: the request id a request travels
under inside the system (the client's, made unique) with the chunks written back carrying the
client's again, and for a chunked upload (`Router.GenerateUpload`) its header's id checked as it
arrives and an `abort` that reads what the client is still sending first, so a refused client sees
why."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeAlias

import grpc
from grpc.aio import Metadata

from supernode.runtime.errors import check_request_id

# At most this many messages are read from a refused upload (see DrainingContext).
MAX_DRAINED_MESSAGES = 100_000
INTERNAL_ID_SUFFIX_CHARS = 13  # what `internal_id` adds: "." + 12 hex digits
MetadataLike = Metadata | Sequence[tuple[str, str | bytes]]  # what grpc.aio takes as call metadata
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]  # a servicer context, whatever its messages


def internal_id(client_id: str) -> str:
    """The id a request travels under inside the system: the client's, made unique (a reused id must
    not collide with a concurrent request's decode reservation)."""
    return f"{client_id}.{uuid.uuid4().hex[:12]}"


class ForwardingContext(Context):
    """A servicer context that hands every call to the one it wraps; the wrappers below override
    what they change. A `ServicerContext` itself, so a handler and the type checker take a wrapper
    for what it stands in for."""

    def __init__(self, context: Context) -> None:
        self._context = context

    async def read(self) -> Any:
        return await self._context.read()

    async def write(self, message: Any) -> None:
        await self._context.write(message)

    async def send_initial_metadata(self, initial_metadata: MetadataLike) -> None:
        await self._context.send_initial_metadata(initial_metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataLike = ()
    ) -> NoReturn:
        await self._context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self._context.abort_with_status(status)

    def set_trailing_metadata(self, trailing_metadata: MetadataLike) -> None:
        self._context.set_trailing_metadata(trailing_metadata)

    def invocation_metadata(self) -> Metadata | None:
        return self._context.invocation_metadata()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()

    def peer(self) -> str:
        return self._context.peer()

    def peer_identities(self) -> Iterable[bytes] | None:
        return self._context.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self._context.peer_identity_key()

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self._context.auth_context()

    def time_remaining(self) -> float:
        return self._context.time_remaining()

    def trailing_metadata(self) -> Metadata:
        return self._context.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._context.code()

    def details(self) -> str:
        return self._context.details()

    # Any: grpc's stubs type the callback as a class of their own, which no function is.
    def add_done_callback(self, callback: Any) -> None:
        self._context.add_done_callback(callback)

    def cancelled(self) -> bool:
        return self._context.cancelled()

    def done(self) -> bool:
        return self._context.done()


class ClientIdContext(ForwardingContext):
    """The servicer context, except that written chunks carry the client's request id again (none
    set: as written)."""

    def __init__(self, context: Context, client_id: str = "") -> None:
        super().__init__(context)
        self.client_id = client_id

    async def write(self, message: Any) -> None:
        if self.client_id:
            message.request_id = self.client_id
        await self._context.write(message)


class DrainingContext(ForwardingContext):
    """An upload's servicer context whose `abort` first reads what the client is still sending.

    grpc.aio reports a client's write to a call that has already ended as INTERNAL ("Internal error
    from Core") in place of the call's status, so a client still streaming its prompt would not see
    why it was refused (a full router, a bad header, a bad chunk). The rest is read and dropped (no
    spooling, at most `MAX_DRAINED_MESSAGES`), then the call ends with its real status."""

    def __init__(self, context: Context, messages: AsyncIterator[Any]) -> None:
        super().__init__(context)
        self._messages = messages

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataLike = ()
    ) -> NoReturn:
        num_read = 0
        try:
            async for _ in self._messages:
                num_read += 1
                if num_read >= MAX_DRAINED_MESSAGES:
                    break
        except Exception:  # noqa: BLE001 - a broken stream only ends the drain; the status still goes
            pass
        await self._context.abort(code, details, trailing_metadata)


class UploadIds(ClientIdContext):
    """An upload's messages as they arrive, its header's request id checked and made unique, and
    the servicer context whose written chunks carry the client's id again."""

    def __init__(self, messages: AsyncIterator[Any], context: Context) -> None:
        super().__init__(context)
        self._messages = messages

    async def messages(self) -> AsyncIterator[Any]:
        async for message in self._messages:
            if message.WhichOneof("part") == "header" and message.header.request_id:
                self.client_id = message.header.request_id
                check_request_id(self.client_id)  # INVALID_ARGUMENT naming request_id
                message.header.request_id = internal_id(self.client_id)
            yield message
