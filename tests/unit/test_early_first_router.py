"""The first token offered when its batch starts and held by the router until due: on the in-process
cluster (the real engines on a virtual clock), the same tokens at the same instants as the offer at the
batch's end, and an instance that dies mid-batch does not let its token out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from supernode.core import tokens
from supernode.core.request import Request, Sampling
from supernode.inproc import ClusterShape, InprocCluster, LocalPrefillPeer
from supernode.runtime.clock import VirtualClock
from supernode.runtime.errors import UnavailableError
from supernode.runtime.peers import PrefillResult
from tests.conftest import make_settings

SHAPE = ClusterShape(num_prefill=2, num_decode=1, prefill_npus=1, decode_dies=2, pool_bytes=10**12)
PROMPTS = [[200 + (i * k) % 97 for i in range(300 + 150 * k)] for k in range(1, 7)]


def _cluster(early_first: bool) -> InprocCluster:
    return InprocCluster(make_settings(), VirtualClock(start=1.0), SHAPE, early_first=early_first)


async def _run(cluster: InprocCluster, request: Request) -> list[int]:
    return [t async for chunk in cluster.generate(request) for t in chunk.token_ids]


async def _serve(early_first: bool) -> list[tuple[list[int], float, float]]:
    """Six requests arriving together: their tokens, first-token and finish instants."""
    async with _cluster(early_first) as cluster:
        requests = [
            cluster.router.make_request(f"r{i}", "", prompt, 6, Sampling(seed=i))
            for i, prompt in enumerate(PROMPTS)
        ]
        outputs = await asyncio.gather(*(_run(cluster, r) for r in requests))
    return [(out, r.first_token_s, r.finished_s) for out, r in zip(outputs, requests, strict=True)]


async def test_held_early_offers_give_the_same_tokens_at_the_same_instants():
    late, early = await _serve(False), await _serve(True)
    expected = [tokens.TokenModel(p, i).generate(6) for i, p in enumerate(PROMPTS)]
    assert [out for out, _, _ in early] == expected
    assert early == late


class DiesMidBatch(LocalPrefillPeer):
    """A prefill instance that offers the token when its batch starts, then dies halfway through it."""

    async def prefill(
        self, request_id: str, prompt: Sequence[int], sampling: Sampling,
        on_first_token: Callable[[int, float], None] | None = None, sent_s: float = 0.0,
    ) -> PrefillResult:  # fmt: skip
        clock = self.engine.clock
        due: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def offer(token: int, due_s: float) -> None:
            if on_first_token is not None:
                on_first_token(token, due_s)
            if not due.done():
                due.set_result(due_s)

        call = asyncio.ensure_future(self.engine.prefill(request_id, prompt, sampling, offer, sent_s))
        end = await due
        self.died_due_s = end
        await clock.sleep((end - clock.now()) / 2)
        call.cancel()
        raise UnavailableError("prefill died mid-batch")


async def test_a_token_offered_by_an_instance_that_died_before_it_was_due_is_not_let_out():
    async with _cluster(True) as cluster:
        workers = cluster.router.workers.prefill
        dying = DiesMidBatch(workers[0].peer.engine)
        workers[0].peer = dying
        workers[1].num_inflight = 5  # the dying one is the least loaded: tried first
        request = cluster.router.make_request("r", "", PROMPTS[3], 4, Sampling(seed=9))
        got = await _run(cluster, request)
    assert got == tokens.TokenModel(PROMPTS[3], 9).generate(4)
    assert request.prefill_worker == "prefill-1"
    # The retry started halfway through the dead batch, so its token is due later than the dead one's.
    assert request.first_token_s > dying.died_due_s + 1e-6
