"""The load generator's `Target` for the in-process cluster: requests go straight to the router engine."""

from __future__ import annotations

import contextlib
from types import TracebackType

from supernode.core.request import Request, Sampling
from supernode.inproc import InprocCluster
from supernode.loadgen.records import RequestResult, RequestSpec
from supernode.loadgen.targets import error_kind


class InprocTarget:
    """Sends each spec to `cluster.router`; stamps are the cluster clock's (emulated seconds), so
    the loadgen's wall-clock fields read as emulated time when run on a virtual-time loop."""

    name = "inproc"

    def __init__(self, cluster: InprocCluster, keep_itl: bool = True, keep_tokens: bool = False) -> None:
        self.cluster = cluster
        self.keep_itl = keep_itl  # record every inter-chunk gap (memory grows with output tokens)
        self.keep_tokens = keep_tokens
        self.tokens: dict[str, list[int]] = {}  # request id -> output tokens, when keep_tokens
        self.num_migrated = 0  # requests that moved to another decode instance at least once
        self.num_migrations = 0  # their moves

    async def __aenter__(self) -> InprocTarget:
        await self.cluster.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cluster.stop()

    async def send(self, spec: RequestSpec, result: RequestResult) -> None:
        clock, router = self.cluster.clock, self.cluster.router
        last = result.sent_s
        request: Request | None = None
        try:
            request = router.make_request(
                spec.request_id, "", spec.token_ids, spec.max_tokens, Sampling(spec.seed)
            )
            async with contextlib.aclosing(router.generate(request)) as chunks:
                async for _ in chunks:
                    now = clock.now()
                    if not result.first_token_s:
                        result.first_token_s = now
                    elif self.keep_itl:
                        result.itl_s.append(now - last)
                    last = now
            result.is_ok = True
            result.num_prompt_tokens, result.num_output_tokens = (
                request.num_prompt_tokens,
                request.num_generated,
            )
            result.num_cached_tokens, result.has_cache_info = request.num_cached_tokens, True
            result.ttft_s, result.tpot_s, result.e2e_s = request.ttft_s, request.tpot_s, request.e2e_s
            if self.keep_tokens:
                self.tokens[spec.request_id] = request.output
        except Exception as exc:
            result.error_kind, result.error_message = error_kind(exc), str(exc)[:300]
            result.num_prompt_tokens = len(spec.token_ids)
        result.done_s = clock.now()
        if request is not None and request.num_migrations:
            self.num_migrated += 1
            self.num_migrations += request.num_migrations
