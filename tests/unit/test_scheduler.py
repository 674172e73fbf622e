"""The pure schedulers, driven by factories over request records."""

from __future__ import annotations

from typing import Any

import pytest

from supernode.core.request import Request, RequestStatus, Sampling, StateError
from supernode.core.scheduler import (
    CapacityError,
    DecodeBatch,
    DecodeScheduler,
    PrefillBatch,
    PrefillScheduler,
    QueueFullError,
)
from supernode.core.tokens import TokenModel


def make_request(rid: str, prompt_len: int, max_tokens: int = 5, cached: int = 0, seed: int = 0,
                 stop: frozenset[int] = frozenset()) -> Request:  # fmt: skip
    prompt = [300 + i % 1000 for i in range(prompt_len)]
    return Request(rid, prompt, max_tokens, Sampling(seed, stop), num_cached_tokens=cached)


def must(batch: PrefillBatch | DecodeBatch | None) -> Any:
    assert batch is not None
    return batch


def make_prefill(budget=1000, max_queue=8) -> PrefillScheduler:
    return PrefillScheduler(budget, max_queue)


def test_prefill_batches_under_budget_and_chunks_long_prompts():
    s = make_prefill(budget=1000)
    a, b, c = make_request("a", 600), make_request("b", 900, cached=100), make_request("c", 50)
    for r in (a, b, c):
        s.add(r)
    assert s.num_waiting_tokens == 600 + 800 + 50
    first = must(s.schedule())
    assert [(x.request.request_id, x.num_new, x.num_context) for x in first.slices] == [
        ("a", 600, 0),
        ("b", 400, 100),
    ]
    assert a.status is RequestStatus.PREFILLING and c.status is RequestStatus.QUEUED
    assert s.postprocess(first) == [a]
    second = must(s.schedule())
    assert [(x.request.request_id, x.num_new, x.num_context) for x in second.slices] == [
        ("b", 400, 500),
        ("c", 50, 0),
    ]
    assert s.postprocess(second) == [b, c]
    assert s.schedule() is None and s.num_waiting_tokens == 0
    assert b.num_prefill_batches == 2


def test_prefill_queue_is_bounded():
    s = make_prefill(max_queue=2)
    s.add(make_request("a", 10))
    s.add(make_request("b", 10))
    with pytest.raises(QueueFullError):
        s.add(make_request("c", 10))


def test_prefill_cancelled_while_running_is_not_returned():
    s = make_prefill()
    a, b = make_request("a", 100), make_request("b", 100)
    s.add(a)
    s.add(b)
    batch = must(s.schedule())
    s.cancel(a)
    assert s.postprocess(batch) == [b] and a.status is RequestStatus.CANCELLED
    assert not s.waiting and s.num_waiting_tokens == 0


def make_decode(num_dies=2, max_batch=2, capacity=1000, mtp_depth=0, accept=0.0) -> DecodeScheduler:
    return DecodeScheduler(num_dies, max_batch, capacity, max_queue=4, mtp_depth=mtp_depth, mtp_accept=accept)


def add_seq(s: DecodeScheduler, rid: str, prompt_len=10, max_tokens=5, seed=0, stop=frozenset()):
    request = make_request(rid, prompt_len, max_tokens, seed=seed, stop=stop)
    s.reserve(request)
    request.advance(RequestStatus.TRANSFERRING)
    s.add(request, TokenModel(request.prompt, seed))
    return request


def run(s: DecodeScheduler) -> list[int]:
    emitted = []
    while (batch := s.schedule()) is not None:
        for out in s.postprocess(batch):
            emitted += out.token_ids
    return emitted


def test_decode_reserves_on_the_emptiest_rank_and_bounds_memory():
    s = make_decode(capacity=100)
    a, b, c = make_request("a", 50, 10), make_request("b", 10, 10), make_request("c", 10, 10)
    for r in (a, b, c):
        s.reserve(r)
    assert (a.dp_rank, b.dp_rank, c.dp_rank) == (0, 1, 1)
    with pytest.raises(QueueFullError):
        s.reserve(make_request("d", 70, 10))  # neither rank has 80 tokens free
    with pytest.raises(CapacityError):
        s.reserve(make_request("e", 95, 10))  # can never fit
    s.release(a)
    s.release(a)  # idempotent
    d = make_request("d", 70, 10)
    s.reserve(d)
    assert d.dp_rank == 0 and s.kv_reserved == [80, 40] and s.num_kv_reserved == 120


def test_decode_runs_until_max_tokens_and_releases():
    s = make_decode()
    seq = add_seq(s, "a", max_tokens=4)
    assert len(run(s)) == 3, "prefill gave the first of 4 tokens"
    assert seq.finish_reason == "length" and seq.num_decode_steps == 3
    assert seq.status is RequestStatus.FINISHED and s.kv_reserved == [0, 0] and s.num_reserved == 0
    assert s.num_kv_reserved == 0


def test_counting_only_gives_the_same_counts_and_steps():
    def steps(materialise: bool) -> list[tuple[int, int]]:
        s = make_decode(num_dies=1, max_batch=8, mtp_depth=1, accept=0.7)
        reqs = []
        for i in range(4):
            r = make_request(f"r{i}", 10, 20 + i, seed=3)
            s.reserve(r)
            r.advance(RequestStatus.TRANSFERRING)
            s.add(r, TokenModel(r.prompt, 3) if materialise else None)
            reqs.append(r)
        run(s)
        return [(r.num_generated, r.num_decode_steps) for r in reqs]

    assert steps(True) == steps(False)


def test_decode_batch_per_die_is_bounded_and_waiting_joins_later():
    s = make_decode(num_dies=1, max_batch=2)
    seqs = [add_seq(s, f"r{i}", max_tokens=3) for i in range(3)]
    batch = must(s.schedule())
    assert batch.ranks == ((seqs[0], seqs[1]),) and len(s.waiting) == 1
    assert batch.rank_kv_lens() == [[11, 11]] and batch.max_batch_per_die == 2
    s.postprocess(batch)
    s.postprocess(must(s.schedule()))  # the first two finish (2 decode steps each)
    assert s.schedule() is not None and s.running[0] == [seqs[2]]


def test_a_tighter_limit_is_per_call_and_leaves_the_bound_alone():
    s = make_decode(num_dies=1, max_batch=4)
    for i in range(3):
        add_seq(s, f"r{i}")
    assert must(s.schedule(max_batch_per_die=1)).num_seqs == 1 and s.max_batch_per_die == 4


def test_stop_token_finishes_early():
    s = make_decode()
    stop = TokenModel([300 + i for i in range(10)], seed=0).generate(3)[-1]  # the 3rd generated token
    seq = add_seq(s, "a", max_tokens=50, stop=frozenset({stop}))
    run(s)
    assert seq.finish_reason == "stop" and seq.num_generated == 4


def test_mtp_acceptance_is_seeded_and_near_the_rate():
    def tokens_per_step(seed):
        s = make_decode(num_dies=1, max_batch=64, capacity=10**6, mtp_depth=1, accept=0.7)
        s.max_queue = 64
        seqs = [add_seq(s, f"r{i}", max_tokens=200, seed=seed) for i in range(40)]
        run(s)
        return sum(x.num_generated - 1 for x in seqs) / sum(x.num_decode_steps for x in seqs), [
            x.num_decode_steps for x in seqs
        ]

    rate, steps = tokens_per_step(1)
    assert rate == pytest.approx(1.7, abs=0.05)
    assert tokens_per_step(1)[1] == steps, "repeatable"


def test_cancel_releases_capacity_and_a_running_step_skips_it():
    s = make_decode()
    seq = add_seq(s, "a")
    batch = must(s.schedule())
    s.cancel(seq)
    assert s.postprocess(batch) == []
    assert s.num_running == 0 and s.kv_reserved == [0, 0] and seq.status is RequestStatus.CANCELLED


def test_request_lifecycle_refuses_illegal_moves():
    r = make_request("a", 10)
    r.advance(RequestStatus.PREFILLING)
    r.advance(RequestStatus.TRANSFERRING)
    r.advance(RequestStatus.PREFILLING)  # recompute
    with pytest.raises(StateError):
        r.advance(RequestStatus.QUEUED)
    r.end(RequestStatus.FAILED, "kv lost twice")
    r.end(RequestStatus.CANCELLED)  # a final status stays
    assert r.status is RequestStatus.FAILED and r.error == "kv lost twice"
    with pytest.raises(StateError):
        r.advance(RequestStatus.DECODING)
