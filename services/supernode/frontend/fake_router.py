"""A fake Router gRPC service for the frontend's codec tests and benchmark: real gRPC, no workers.

It exists for what the real stack cannot do on demand: fail with any status at any point
("!error:", "!fail-after:") and give letters the HTTP tests can read. Tests of the frontend against
the real serving logic use `inproc.serve_router` (tests/service/test_frontend_inproc.py).

Behaviour, all deterministic:
- tokens: prompt = UTF-8 bytes of `prompt` (or `token_ids`); output token i is the lowercase letter
  `97 + (seed + num_prompt_tokens + i) % 26`, text = that letter. `stop_token_ids` stop after the token.
- context cache: a prompt's leading whole blocks of `block_tokens` that an earlier prompt had are "cached".
- stats: ttft_s = 0.05 + 1e-5 * uncached prompt tokens, tpot_s = 0.03, e2e = ttft + tpot * (n - 1).
- validation like the router's: exactly one of prompt/token_ids, 1 <= max_tokens <= max_tokens_limit
  (INVALID_ARGUMENT "<field>: <rule>").
- fault injection by markers anywhere in the prompt: "!error:<STATUS>" aborts before any token with that
  gRPC status (and a `retry-after-s` trailer of 2.5); "!fail-after:<n>" aborts UNAVAILABLE after n tokens;
  "!migrated:<n>" reports n migrations in the final stats (as a request moved n times would).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from supernode.runtime import start_delay
from supernode.runtime.errors import RETRY_AFTER_KEY
from supernode.v1 import router_pb2, router_pb2_grpc

_ERROR = re.compile(r"!error:([A-Z_]+)")
_FAIL_AFTER = re.compile(r"!fail-after:(\d+)")
_MIGRATED = re.compile(r"!migrated:(\d+)")


class FakeRouter(router_pb2_grpc.RouterServicer):
    def __init__(
        self, *, chunk_delay_s: float = 0.0, tokens_per_chunk: int = 1, max_tokens_limit: int = 32768,
        block_tokens: int = 16,
    ) -> None:  # fmt: skip
        self.chunk_delay_s = chunk_delay_s  # wall seconds between chunks
        self.tokens_per_chunk = tokens_per_chunk
        self.max_tokens_limit = max_tokens_limit
        self.block_tokens = block_tokens
        self.requests: list[router_pb2.GenerateRequest] = []  # every request received, in order
        self.queued_s: list[float] = []  # each request's `supernode-queued-s` metadata (0 = none)
        self.num_cancelled = 0  # streams the client cancelled before the end
        self._blocks: set[tuple[int, ...]] = set()
        self._ids = itertools.count(1)

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateChunk]:
        self.requests.append(request)
        self.queued_s.append(start_delay.queued_s(context.invocation_metadata()))
        prompt = list(request.prompt.encode()) if request.prompt else list(request.token_ids)
        await self._check(request, context)
        request_id = request.request_id or f"fake-{next(self._ids)}"
        num_cached = self._cache(prompt)
        fail_after = _fail_after(request.prompt)
        migrated = int(match.group(1)) if (match := _MIGRATED.search(request.prompt)) else 0
        stop = set(request.sampling.stop_token_ids)
        tokens = [97 + (request.sampling.seed + len(prompt) + i) % 26 for i in range(request.max_tokens)]
        for i, token in enumerate(tokens):
            if token in stop:
                tokens = tokens[: i + 1]
                break
        # Counted when the call ends before its last chunk, whatever the generator is doing: a stream
        # blocked on flow control (its reader stalled) is cancelled outside the generator's frames.
        ended = [False]
        # grpc's stubs type the callback as a class of their own, which no function is.
        context.add_done_callback(lambda _: self._on_done(ended[0]))  # type: ignore[arg-type]
        for start in range(0, len(tokens), self.tokens_per_chunk):
            if fail_after is not None and start >= fail_after:
                ended[0] = True
                await context.abort(grpc.StatusCode.UNAVAILABLE, "decode worker lost")
            if self.chunk_delay_s and start:
                await asyncio.sleep(self.chunk_delay_s)
            part = tokens[start : start + self.tokens_per_chunk]
            finished = start + len(part) >= len(tokens)
            yield router_pb2.GenerateChunk(
                token_ids=part,
                text=bytes(part).decode(),
                finished=finished,
                finish_reason=("stop" if len(tokens) < request.max_tokens else "length") if finished else "",
                stats=_stats(len(prompt), len(tokens), num_cached, migrated) if finished else None,
                request_id=request_id,
            )
        ended[0] = True

    def _on_done(self, ended: bool) -> None:
        if not ended:
            self.num_cancelled += 1

    async def Status(  # noqa: N802 (gRPC method name)
        self, request: router_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.StatusResponse:
        return router_pb2.StatusResponse()

    async def _check(self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> None:
        if match := _ERROR.search(request.prompt):
            code = grpc.StatusCode[match.group(1)]
            await context.abort(code, f"injected {code.name}", trailing_metadata=((RETRY_AFTER_KEY, "2.5"),))
        if bool(request.prompt) == bool(request.token_ids):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt: exactly one of prompt, token_ids")
        if not 1 <= request.max_tokens <= self.max_tokens_limit:
            rule = f"max_tokens: must be in [1, {self.max_tokens_limit}], got {request.max_tokens}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, rule)

    def _cache(self, prompt: list[int]) -> int:
        """Prompt tokens in leading blocks seen before; records this prompt's blocks."""
        num_blocks = len(prompt) // self.block_tokens
        prefixes = [tuple(prompt[: (b + 1) * self.block_tokens]) for b in range(num_blocks)]
        num_hit = next((b for b, prefix in enumerate(prefixes) if prefix not in self._blocks), num_blocks)
        self._blocks.update(prefixes)
        return num_hit * self.block_tokens


def _fail_after(prompt: str) -> int | None:
    match = _FAIL_AFTER.search(prompt)
    return int(match.group(1)) if match else None


def _stats(num_prompt: int, num_output: int, num_cached: int, migrated: int) -> router_pb2.RequestStats:
    ttft_s = 0.05 + 1e-5 * (num_prompt - num_cached)
    tpot_s = 0.03
    return router_pb2.RequestStats(
        num_prompt_tokens=num_prompt, num_output_tokens=num_output, num_cached_tokens=num_cached,
        ttft_s=ttft_s, tpot_s=tpot_s, e2e_s=ttft_s + tpot_s * (num_output - 1), prefill_queue_s=0.001,
        prefill_compute_s=ttft_s - 0.002, cache_load_s=0.0005, kv_pull_s=0.0005,
        prefill_worker="fake-prefill", decode_worker="fake-decode", num_migrations=migrated,
    )  # fmt: skip


async def _serving_health() -> health.aio.HealthServicer:
    """A health service that answers SERVING (the fake is always ready)."""
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return servicer


@contextlib.asynccontextmanager
async def serve_fake_router(router: FakeRouter | None = None) -> AsyncIterator[tuple[str, FakeRouter]]:
    """Serves `router` (default: a fresh FakeRouter) on 127.0.0.1:<ephemeral>; yields (address, router)."""
    router = router or FakeRouter()
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(router, server)
    health_pb2_grpc.add_HealthServicer_to_server(await _serving_health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", router
    finally:
        await server.stop(grace=None)


async def _serve_forever(port: int, tokens_per_chunk: int) -> None:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(FakeRouter(tokens_per_chunk=tokens_per_chunk), server)
    health_pb2_grpc.add_HealthServicer_to_server(await _serving_health(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    """`python -m supernode.frontend.fake_router PORT [TOKENS_PER_CHUNK]`: a fake router process."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    asyncio.run(_serve_forever(int(args[0]), int(args[1]) if len(args) > 1 else 1))


if __name__ == "__main__":
    main()
