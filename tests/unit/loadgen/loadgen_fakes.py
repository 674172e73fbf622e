"""Factories for loadgen tests: results, a fake SDK client with the `supernode.sdk` shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernode.loadgen.records import RequestResult


def make_result(
    ttft_ms: float = 100.0, tpot_ms: float = 10.0, num_out: int = 10, is_ok: bool = True, **kw: Any
) -> RequestResult:
    r = RequestResult(
        "r", is_ok=is_ok, num_output_tokens=num_out, num_prompt_tokens=kw.pop("num_in", 100), **kw
    )
    r.ttft_s, r.tpot_s = ttft_ms / 1000, tpot_ms / 1000
    r.e2e_s = r.ttft_s + r.tpot_s * (num_out - 1)
    return r


@dataclass(frozen=True)
class FakeStats:
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    ttft_s: float
    tpot_s: float
    e2e_s: float


@dataclass
class FakeChunk:
    request_id: str
    token_ids: list[int]
    finished: bool = False
    finish_reason: str = ""
    text: str = ""
    stats: FakeStats | None = None


class FakeSupernodeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, 429


@dataclass
class FakeClient:
    """Streams `max_tokens` tokens two per chunk; every prompt starting with token 999 fails."""

    address: str = ""
    cached_share: float = 0.25
    calls: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def generate(
        self,
        prompt: str | None = None,
        *,
        token_ids: Sequence[int] | None = None,
        max_tokens: int = 16,
        **kw: Any,
    ) -> AsyncIterator[FakeChunk]:
        ids = list(token_ids or [])
        self.calls.append({"token_ids": ids, "max_tokens": max_tokens, **kw})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002)
            if ids[:1] == [999]:
                raise FakeSupernodeError("RESOURCE_EXHAUSTED", "queue full")
            for start in range(0, max_tokens, 2):
                n = min(2, max_tokens - start)
                last = start + n >= max_tokens
                stats = FakeStats(len(ids), max_tokens, int(len(ids) * self.cached_share), 0.05, 0.01, 0.5)
                yield FakeChunk(
                    kw.get("request_id", ""),
                    [300] * n,
                    last,
                    "length" if last else "",
                    "",
                    stats if last else None,
                )
                await asyncio.sleep(0.001)
        finally:
            self.in_flight -= 1
