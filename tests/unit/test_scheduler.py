"""The pure schedulers, driven by factories and hand-built inputs."""

from __future__ import annotations

import pytest

from supernode.core.scheduler import (
    CapacityError,
    DecodeScheduler,
    PrefillJob,
    PrefillScheduler,
    QueueFullError,
)
from supernode.core.tokens import TokenModel


def make_prefill(budget=1000, max_queue=8) -> PrefillScheduler:
    return PrefillScheduler(budget, max_queue)


def test_prefill_batches_under_budget_and_chunks_long_prompts():
    s = make_prefill(budget=1000)
    a, b, c = PrefillJob("a", 600, 0), PrefillJob("b", 900, 100), PrefillJob("c", 50, 0)
    for job in (a, b, c):
        s.add(job)
    first = s.schedule()
    assert [(x.job.request_id, x.num_new, x.num_context) for x in first.slices] == [
        ("a", 600, 0),
        ("b", 400, 100),
    ]
    assert s.postprocess(first) == [a]
    second = s.schedule()
    assert [(x.job.request_id, x.num_new, x.num_context) for x in second.slices] == [
        ("b", 400, 500),
        ("c", 50, 0),
    ]
    assert s.postprocess(second) == [b, c]
    assert s.schedule() is None
    assert b.num_batches == 2


def test_prefill_queue_is_bounded():
    s = make_prefill(max_queue=2)
    s.add(PrefillJob("a", 10, 0))
    s.add(PrefillJob("b", 10, 0))
    with pytest.raises(QueueFullError):
        s.add(PrefillJob("c", 10, 0))


def make_decode(num_dies=2, max_batch=2, capacity=1000, mtp_depth=0, accept=0.0) -> DecodeScheduler:
    return DecodeScheduler(num_dies, max_batch, capacity, max_queue=4, mtp_depth=mtp_depth, mtp_accept=accept)


def add_seq(s: DecodeScheduler, rid: str, prompt_len=10, max_tokens=5, seed=0):
    reservation = s.reserve(rid, prompt_len, max_tokens)
    seq = s.new_seq(reservation, TokenModel([300 + i for i in range(prompt_len)], seed), max_tokens, seed)
    s.add(seq)
    return seq


def test_decode_reserves_on_the_emptiest_rank_and_bounds_memory():
    s = make_decode(capacity=100)
    assert s.reserve("a", 50, 10).dp_rank == 0
    assert s.reserve("b", 10, 10).dp_rank == 1
    assert s.reserve("c", 10, 10).dp_rank == 1
    with pytest.raises(QueueFullError):
        s.reserve("d", 70, 10)  # neither rank has 80 tokens free
    with pytest.raises(CapacityError):
        s.reserve("e", 95, 10)  # can never fit
    s.release("a")
    assert s.reserve("d", 70, 10).dp_rank == 0


def test_decode_runs_until_max_tokens_and_releases():
    s = make_decode()
    seq = add_seq(s, "a", max_tokens=4)
    emitted = []
    while s.schedule() is not None:
        for out in s.postprocess():
            emitted += out.token_ids
    assert len(emitted) == 3, "prefill gave the first of 4 tokens"
    assert seq.finish_reason == "length" and seq.num_steps == 3
    assert s.kv_reserved == [0, 0]


def test_decode_batch_per_die_is_bounded_and_waiting_joins_later():
    s = make_decode(num_dies=1, max_batch=2)
    seqs = [add_seq(s, f"r{i}", max_tokens=3) for i in range(3)]
    s.schedule()
    assert [len(b) for b in s.running] == [2] and len(s.waiting) == 1
    s.postprocess()
    s.postprocess()  # the first two finish (2 decode steps each)
    assert s.schedule() is not None and s.running[0] == [seqs[2]]


def test_stop_token_finishes_early():
    s = make_decode()
    reservation = s.reserve("a", 10, 50)
    model = TokenModel([300 + i for i in range(10)], seed=0)
    stop = TokenModel([300 + i for i in range(10)], seed=0).generate(3)[-1]  # the 3rd generated token
    seq = s.new_seq(reservation, model, 50, 0, frozenset({stop}))
    s.add(seq)
    while s.schedule() is not None:
        s.postprocess()
    assert seq.finish_reason == "stop" and seq.num_generated == 4


def test_mtp_acceptance_is_seeded_and_near_the_rate():
    def tokens_per_step(seed):
        s = make_decode(num_dies=1, max_batch=64, capacity=10**6, mtp_depth=1, accept=0.7)
        seqs = [add_seq(s, f"r{i}", max_tokens=200, seed=seed) for i in range(40)]
        while s.schedule() is not None:
            s.postprocess()
        return sum(x.num_generated - 1 for x in seqs) / sum(x.num_steps for x in seqs), [
            x.num_steps for x in seqs
        ]

    rate, steps = tokens_per_step(1)
    assert rate == pytest.approx(1.7, abs=0.05)
    assert tokens_per_step(1)[1] == steps, "repeatable"


def test_cancel_releases_capacity():
    s = make_decode()
    seq = add_seq(s, "a")
    s.schedule()
    s.cancel(seq)
    assert s.num_running == 0 and s.kv_reserved == [0, 0]
