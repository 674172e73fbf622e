"""Async and sync clients over one gRPC channel to the router."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supernode.runtime.auth import bearer_metadata
from supernode.runtime.errors import DeadlineExceededError, from_rpc_error
from supernode.runtime.retry import retry_options
from supernode.runtime.start_delay import QUEUED_KEY
from supernode.sdk import upload
from supernode.v1 import common_pb2, router_pb2, router_pb2_grpc

_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RequestStats:
    """One request's timings; every time is in emulated seconds."""

    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    ttft_s: float
    tpot_s: float
    e2e_s: float
    prefill_queue_s: float
    prefill_compute_s: float
    cache_load_s: float
    kv_pull_s: float
    prefill_worker: str
    decode_worker: str
    long_context_policy: str = ""  # "" (the prompt fit the window), "truncate" or "xl3m"
    num_segments_scored: int = 0
    num_scoring_tokens: int = 0
    scoring_s: float = 0.0  # TTFT's scoring part
    scoring_compute_s: float = 0.0
    num_final_prompt_tokens: int = 0
    num_migrations: int = 0  # times the request moved to another decode instance after a failure

    @classmethod
    def from_proto(cls, msg: router_pb2.RequestStats) -> RequestStats:
        return cls(**{f.name: getattr(msg, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Chunk:
    request_id: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str
    stats: RequestStats | None


@dataclass(frozen=True, slots=True)
class Completion:
    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: str
    stats: RequestStats


def _request(
    prompt: str | None,
    token_ids: Sequence[int] | None,
    max_tokens: int,
    seed: int,
    temperature: float,
    top_p: float,
    stop_token_ids: Sequence[int],
    ignore_eos: bool,
    request_id: str,
    deadline_s: float,
    min_tokens: int = 0,
    long_context: str = "",
) -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        request_id=request_id,
        prompt=prompt or "",
        token_ids=list(token_ids or ()),
        max_tokens=max_tokens,
        sampling=common_pb2.Sampling(
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            stop_token_ids=list(stop_token_ids),
            ignore_eos=ignore_eos,
            min_tokens=min_tokens,
        ),
        deadline_s=deadline_s,
        long_context=long_context,
    )


def _chunk(msg: router_pb2.GenerateChunk) -> Chunk:
    return Chunk(
        request_id=msg.request_id,
        token_ids=list(msg.token_ids),
        text=msg.text,
        finished=msg.finished,
        finish_reason=msg.finish_reason,
        stats=RequestStats.from_proto(msg.stats) if msg.finished else None,
    )


def _collect(chunks: list[Chunk]) -> Completion:
    last = chunks[-1]
    assert last.stats is not None
    return Completion(
        request_id=last.request_id,
        token_ids=[t for c in chunks for t in c.token_ids],
        text="".join(c.text for c in chunks),
        finish_reason=last.finish_reason,
        stats=last.stats,
    )


_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    *retry_options(),
    # A router that comes back (restart, new container) is used again within about a second.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

Metadata = Sequence[tuple[str, str]]


def _call_metadata(token: str, metadata: Metadata) -> tuple[tuple[str, str], ...]:
    """Metadata sent with every call: the router's bearer token (if any), then the caller's own."""
    return (*bearer_metadata(token), *metadata)


class AsyncClient:
    """Async client. `timeout_s` bounds each call in wall seconds (None = no bound); `token` is the
    router's bearer token (SUPERNODE_ROUTER__AUTH_TOKEN) and `metadata` extra pairs sent on every call."""

    def __init__(
        self,
        target: str = "127.0.0.1:50050",
        *,
        timeout_s: float | None = 60.0,
        token: str = "",
        metadata: Metadata = (),
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._metadata = _call_metadata(token, metadata)
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def generate(
        self,
        prompt: str | None = None,
        *,
        token_ids: Sequence[int] | None = None,
        max_tokens: int = 16,
        seed: int = 0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop_token_ids: Sequence[int] = (),
        ignore_eos: bool = True,
        request_id: str = "",
        deadline_s: float = 0.0,
        timeout_s: float | None = None,
        min_tokens: int = 0,
        long_context: str = "",
        prompt_chunks: upload.PromptChunks | None = None,
        queued_s: float = 0.0,
    ) -> AsyncGenerator[Chunk, None]:
        """Streams a completion chunk by chunk; the last chunk has `finished` and `stats`.

        The SDK ignores end-of-sequence by default, so exactly `max_tokens` come back (what load
        tests want); with `ignore_eos=False` the model ends at its natural length (finish_reason
        "stop"), never before `min_tokens`. The HTTP frontend defaults to vLLM's `ignore_eos=false`.
        long_context: "reject" | "truncate" | "xl3m" for a prompt over the window ("" = the router's).
        A prompt over `upload.UPLOAD_THRESHOLD`, or one given as `prompt_chunks` (an iterable of text
        or token-id chunks, e.g. read from a file), is sent by the chunked upload. `queued_s`: wall
        seconds the request already waited in front of this call (a gateway's queue); the router
        counts them against its first-token queueing bound (`router.max_queue_delay_s`)."""
        request = _request(
            prompt,
            token_ids,
            max_tokens,
            seed,
            temperature,
            top_p,
            stop_token_ids,
            ignore_eos,
            request_id,
            deadline_s,
            min_tokens,
            long_context,
        )
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        metadata = self._metadata
        if queued_s > 0:
            metadata = (*metadata, (QUEUED_KEY, f"{queued_s:.6f}"))
        if prompt_chunks is not None or upload.is_huge(prompt, token_ids):
            parts = upload.messages(request, prompt, token_ids, prompt_chunks)
            call = self._stub.GenerateUpload(parts, timeout=timeout, metadata=metadata)
        else:
            call = self._stub.Generate(request, timeout=timeout, metadata=metadata)
        try:
            async for msg in call:
                yield _chunk(msg)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            call.cancel()  # a no-op once finished; frees the server when the caller stops early

    async def complete(self, prompt: str | None = None, **kwargs: Any) -> Completion:
        """The whole completion at once."""
        return _collect([chunk async for chunk in self.generate(prompt, **kwargs)])

    async def status(self) -> router_pb2.StatusResponse:
        try:
            return await self._stub.Status(
                router_pb2.StatusRequest(), timeout=self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    async def is_serving(self, timeout_s: float = 1.0) -> bool:
        """True when the router's grpc.health.v1 answers SERVING within `timeout_s` wall seconds."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Client:
    """Blocking client (its own event-loop-free gRPC channel); arguments as AsyncClient's."""

    def __init__(
        self,
        target: str = "127.0.0.1:50050",
        *,
        timeout_s: float | None = 60.0,
        token: str = "",
        metadata: Metadata = (),
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._metadata = _call_metadata(token, metadata)
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def generate(
        self, prompt: str | None = None, *, timeout_s: float | None = None, **kwargs: Any
    ) -> Iterator[Chunk]:
        """Streams a completion; same arguments as AsyncClient.generate."""
        defaults: dict[str, Any] = dict(
            token_ids=None,
            max_tokens=16,
            seed=0,
            temperature=0.0,
            top_p=1.0,
            stop_token_ids=(),
            ignore_eos=True,
            request_id="",
            deadline_s=0.0,
            min_tokens=0,
            long_context="",
        )
        chunks = kwargs.pop("prompt_chunks", None)
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"unknown arguments: {sorted(unknown)}")
        defaults.update(kwargs)
        request = _request(prompt, **defaults)
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        if chunks is not None or upload.is_huge(prompt, defaults["token_ids"]):
            parts = upload.messages(request, prompt, defaults["token_ids"], chunks)
            stream = self._stub.GenerateUpload(parts, timeout=timeout, metadata=self._metadata)
        else:
            stream = self._stub.Generate(request, timeout=timeout, metadata=self._metadata)
        try:
            for msg in stream:
                yield _chunk(msg)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def complete(self, prompt: str | None = None, **kwargs: Any) -> Completion:
        return _collect(list(self.generate(prompt, **kwargs)))


__all__ = ["AsyncClient", "Client", "Chunk", "Completion", "RequestStats", "DeadlineExceededError"]
