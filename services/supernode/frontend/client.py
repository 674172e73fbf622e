"""What the frontend needs from the router client: the slice of `supernode.sdk.AsyncClient` it calls.

Spelled out as Protocols so a fake (or an SDK change) that drifts fails the type check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from supernode.runtime.config import Settings
from supernode.runtime.metrics import RequestStatsLike

# Wall seconds one Generate stream may last; long generations at a slow time_scale take minutes.
STREAM_TIMEOUT_S = 3600.0


class StatsLike(RequestStatsLike, Protocol):
    """The SDK's `RequestStats` (emulated seconds)."""

    @property
    def num_migrations(self) -> int: ...


class ChunkLike(Protocol):
    """The SDK's `Chunk`."""

    @property
    def request_id(self) -> str: ...
    @property
    def token_ids(self) -> list[int]: ...
    @property
    def text(self) -> str: ...
    @property
    def finished(self) -> bool: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def stats(self) -> StatsLike | None: ...


class RouterClient(Protocol):
    def generate(
        self,
        prompt: str | None = None,
        *,
        token_ids: Sequence[int] | None = None,
        max_tokens: int = 16,
        seed: int = 0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop_token_ids: Sequence[int] = (),
        ignore_eos: bool = False,
        request_id: str = "",
        timeout_s: float | None = None,
        long_context: str = "",
        min_tokens: int = 0,
        queued_s: float = 0.0,
    ) -> AsyncIterator[ChunkLike]: ...

    async def is_serving(self, timeout_s: float = 1.0) -> bool:
        """True when the router answers its health check as SERVING."""
        ...

    async def close(self) -> None: ...


ClientFactory = Callable[[], RouterClient]


def sdk_client_factory(settings: Settings) -> ClientFactory:
    """Builds the real SDK client to `settings.router.address` (called inside the event loop)."""

    def build() -> RouterClient:
        from supernode.sdk import AsyncClient

        client: RouterClient = AsyncClient(
            settings.router.address, timeout_s=STREAM_TIMEOUT_S, token=settings.router.auth_token
        )
        return client

    return build
