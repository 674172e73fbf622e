"""Targets the runner sends to: the Supernode SDK here, HTTP in `http_target`, the in-process cluster
in `sim.target`.

A target fills a `RequestResult` for one `RequestSpec`: absolute perf_counter stamps for first token and
end, token counts, and TTFT/TPOT/e2e/ITL in emulated seconds. It never raises for a failed request; it
records the error kind instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from supernode.loadgen.records import RequestResult, RequestSpec


class Target(Protocol):
    name: str  # "sdk", "http" or "inproc"

    async def __aenter__(self) -> Target: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def send(self, spec: RequestSpec, result: RequestResult) -> None: ...


class GenerateClient(Protocol):
    """The slice of `supernode.sdk.AsyncClient` the SDK target uses."""

    async def __aenter__(self) -> GenerateClient: ...

    async def __aexit__(self, et: Any, e: Any, tb: Any) -> Any: ...

    def generate(
        self,
        prompt: str | None = None,
        *,
        token_ids: Sequence[int] | None = None,
        max_tokens: int = 16,
        seed: int = 0,
        ignore_eos: bool = True,
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> AsyncIterator[Any]: ...


def error_kind(exc: BaseException) -> str:
    """A stable error label: the gRPC status name of a SupernodeError, else a transport kind."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "TIMEOUT"
    if isinstance(exc, ConnectionError | OSError):
        return "CONNECTION"
    return type(exc).__name__


def _sdk_client(address: str, timeout_s: float) -> GenerateClient:
    from supernode.sdk import AsyncClient

    client: GenerateClient = AsyncClient(address, timeout_s=timeout_s)
    return client


class SdkTarget:
    """The router through `supernode.sdk.AsyncClient`; TTFT/TPOT/e2e come from the final `stats`."""

    name = "sdk"

    def __init__(
        self,
        address: str,
        time_scale: float = 1.0,
        timeout_s: float = 600.0,
        client_factory: Callable[[str, float], GenerateClient] = _sdk_client,
    ) -> None:
        self._address, self._time_scale, self._timeout_s = address, time_scale, timeout_s
        self._factory = client_factory
        self._client_or_none: GenerateClient | None = None

    @property
    def _client(self) -> GenerateClient:
        assert self._client_or_none is not None, "enter the target (async with) before sending"
        return self._client_or_none

    async def __aenter__(self) -> SdkTarget:
        # Created here, inside the running loop: a grpc.aio channel belongs to the loop it was made in.
        self._client_or_none = self._factory(self._address, self._timeout_s)
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.__aexit__(et, e, tb)

    async def send(self, spec: RequestSpec, result: RequestResult) -> None:
        stats: Any = None
        last = result.sent_s
        try:
            stream = self._client.generate(
                token_ids=spec.token_ids, max_tokens=spec.max_tokens, seed=spec.seed, ignore_eos=True,
                request_id=spec.request_id, timeout_s=self._timeout_s,
            )  # fmt: skip
            async for chunk in stream:
                now = time.perf_counter()
                if chunk.token_ids:
                    if not result.first_token_s:
                        result.first_token_s = now
                    else:
                        result.itl_s.append((now - last) * self._time_scale)
                    last = now
                    result.num_output_tokens += len(chunk.token_ids)
                if chunk.stats is not None:
                    stats = chunk.stats
            result.is_ok = True
        except Exception as exc:
            result.error_kind, result.error_message = error_kind(exc), str(exc)[:300]
        result.done_s = time.perf_counter()
        self._fill(spec, result, stats)

    def _fill(self, spec: RequestSpec, result: RequestResult, stats: Any) -> None:
        wall = (result.done_s - result.sent_s) * self._time_scale
        result.num_prompt_tokens = len(spec.token_ids)
        if stats is None:
            first = (
                (result.first_token_s - result.sent_s) * self._time_scale if result.first_token_s else wall
            )
            result.ttft_s, result.e2e_s = first, wall
            n = result.num_output_tokens
            result.tpot_s = (wall - first) / (n - 1) if n > 1 else 0.0
            return
        result.num_prompt_tokens = stats.num_prompt_tokens
        result.num_output_tokens = stats.num_output_tokens
        result.num_cached_tokens, result.has_cache_info = stats.num_cached_tokens, True
        result.ttft_s, result.tpot_s, result.e2e_s = stats.ttft_s, stats.tpot_s, stats.e2e_s
