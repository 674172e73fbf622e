"""A call that offers its first token before it returns: prefill answers the first token as soon as
the prompt is computed, and stores the prompt's new blocks after (the paper's asynchronous store).

`EarlyFirst` runs the call as a task and lets its caller wait for whichever comes first, the offered
token or the call's end, so the token can be passed on while the call goes on.

An offer may name the emulated instant the token is due: a live prefill offers it when the batch that
computes it starts, due when that batch ends, so the host's hop back to the router is not added to the
token's time. With a clock to hold on (the router's), the token is taken at its due instant, not
before; an offer the call withdraws before then (its instance failed mid-batch) never counts, and the
next instance's offer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from supernode.runtime.clock import Clock, Timer, call_at

T = TypeVar("T")


class FirstTokenOffer:
    """What a call is given to offer its first token with: `offer(token, due_s)` (due_s: the emulated
    instant the token is computed; 0 or past: now), and `withdraw()` for an offer whose instance failed
    before its token was due."""

    def __init__(self, offer: Callable[[int, float], None], withdraw: Callable[[], None]) -> None:
        self._offer = offer
        self._withdraw = withdraw

    def __call__(self, token: int, due_s: float = 0.0) -> None:
        self._offer(token, due_s)

    def withdraw(self) -> None:
        self._withdraw()


OnFirstToken = Callable[[int, float], None]  # (token, due_s): as FirstTokenOffer.__call__


class EarlyFirst(Generic[T]):
    def __init__(self, call: Callable[[FirstTokenOffer], Awaitable[T]], hold: Clock | None = None) -> None:
        """Starts `call(offer)`; `offer(token, due_s)` may be called any number of times (retries on
        another instance offer the same token again): the first offer taken counts. `hold`: the clock
        an offer is held on until its due instant (None: taken at once, its due instant kept in
        `due_s` for passing on)."""
        self._ready: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._hold = hold
        self._held: tuple[int, Timer] | None = None  # an offer waiting for its due instant
        self.due_s = 0.0  # the taken offer's due instant (0: none given)
        self.was_held = False  # taken by its hold at its due instant (the emulated instant it counts)
        offer = FirstTokenOffer(self._offer, self._withdraw)
        self.task: asyncio.Future[T] = asyncio.ensure_future(call(offer))
        self.task.add_done_callback(self._on_done)

    def _offer(self, token: int, due_s: float) -> None:
        if self._ready.done() or self._held is not None:
            return
        if self._hold is not None and due_s > self._hold.now():
            self._held = (token, call_at(self._hold, due_s, lambda: self._take(token, due_s, True)))
            return
        self._take(token, due_s, False)

    def _take(self, token: int, due_s: float, was_held: bool) -> None:
        self._held = None
        if not self._ready.done():
            self.due_s, self.was_held = due_s, was_held
            self._ready.set_result(token)

    def _withdraw(self) -> None:
        if self._held is not None:
            self._held[1].cancel()
            self._held = None

    def _on_done(self, task: asyncio.Future[T]) -> None:
        if self._held is not None:
            if not task.cancelled() and task.exception() is None:
                return  # it answered before its token was due: the token is still taken when due
            self._withdraw()
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
        self._withdraw()
        if not self.task.done():
            self.task.cancel()
        elif not self.task.cancelled():
            self.task.exception()
