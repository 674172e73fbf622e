"""A call that offers its first token before it returns: prefill answers the first token as soon as
the prompt is computed, and stores the prompt's new blocks after (the paper's asynchronous store).

`EarlyFirst` runs the call as a task and lets its caller wait for whichever comes first, the offered
token or the call's end, so the token can be passed on while the call goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
OnFirstToken = Callable[[int], None]


class EarlyFirst(Generic[T]):
    def __init__(self, call: Callable[[OnFirstToken], Awaitable[T]]) -> None:
        """Starts `call(offer)`; `offer(token)` may be called any number of times (retries on another
        instance offer the same token again): the first offer counts."""
        self._ready: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Future[T] = asyncio.ensure_future(call(self._offer))
        self.task.add_done_callback(self._on_done)

    def _offer(self, token: int) -> None:
        if not self._ready.done():
            self._ready.set_result(token)

    def _on_done(self, _task: asyncio.Future[T]) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    async def first_token(self) -> int | None:
        """The offered token; None when the call returned without offering one. Raises the call's
        error when it failed before offering."""
        token = await self._ready
        if token is None:
            self.task.result()
        return token

    async def result(self) -> T:
        return await self.task

    def cancel(self) -> None:
        """Stops the call (when the caller leaves); once it has ended, its error is taken as seen."""
        if not self.task.done():
            self.task.cancel()
        elif not self.task.cancelled():
            self.task.exception()
