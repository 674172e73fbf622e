"""Many concurrent HTTP streams from one process, without the connection pool's quadratic cost.

httpx's pool (httpcore) walks every connection and every queued request each time a request starts or
ends, so one client carrying N concurrent streams costs O(N) per event and O(N^2) per burst: with 320
streams at once, a load generator spends most of its CPU there and its own slowness shows up in the
latencies it measures (on a 2-core host it competes with the server it measures). `HttpClients` keeps
the same httpx API but spreads requests over shards of at most `per_client` concurrent requests each,
so the walk stays short. A request goes to the least-loaded shard; a new shard is opened only when
every shard is full. The shards share one TLS context: httpx builds one per client otherwise, which
takes tens of milliseconds, too long to do in the middle of a burst.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import httpx

PER_CLIENT = 32  # concurrent requests per httpx client


class HttpClients:
    def __init__(self, per_client: int = PER_CLIENT, **client_kwargs: Any) -> None:
        """`client_kwargs` are httpx.AsyncClient's (base_url, headers, timeout, limits, ...)."""
        if per_client < 1:
            raise ValueError("per_client: must be >= 1")
        self.per_client = per_client
        self._kwargs = client_kwargs
        self._clients: list[httpx.AsyncClient] = []
        self._inflight: list[int] = []

    @property
    def num_clients(self) -> int:
        return len(self._clients)

    async def __aenter__(self) -> HttpClients:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients, self._inflight = self._clients, [], []
        for client in clients:
            await client.aclose()

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[httpx.AsyncClient]:
        k = min(range(len(self._inflight)), key=self._inflight.__getitem__, default=-1)
        if k < 0 or self._inflight[k] >= self.per_client:
            if "verify" not in self._kwargs:  # built once, on the first shard
                self._kwargs["verify"] = httpx.create_ssl_context()
            self._clients.append(httpx.AsyncClient(**self._kwargs))
            self._inflight.append(0)
            k = len(self._clients) - 1
        client = self._clients[k]
        self._inflight[k] += 1
        try:
            yield client
        finally:
            if k < len(self._clients) and self._clients[k] is client:  # not closed meanwhile
                self._inflight[k] -= 1

    @asynccontextmanager
    async def stream(self, method: str, url: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """httpx.AsyncClient.stream on the least-loaded shard."""
        async with self._lease() as client, client.stream(method, url, **kwargs) as response:
            yield response

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """httpx.AsyncClient.request on the least-loaded shard (the body is read)."""
        async with self._lease() as client:
            return await client.request(method, url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)
