"""Counting-only decode steps priced from per-rank loads, against pricing every sequence."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from supernode.core.rank_loads import RankLoads, busiest_rank
from supernode.core.request import Request, RequestStatus, Sampling
from supernode.core.scheduler import DecodeScheduler
from supernode.decode.stepping import StepRun, step_cost_from_loads
from supernode.hw import cost as hw_cost
from supernode.hw.specs import DecodeDeployment


def make_scheduler(num_dies: int = 8) -> DecodeScheduler:
    return DecodeScheduler(num_dies, 6, 1 << 20, 1 << 10, mtp_depth=1, mtp_accept=0.7)


def admit(scheduler: DecodeScheduler, rng: random.Random, index: int) -> Request:
    request = Request(f"r{index}", [1] * rng.randint(1, 3000), rng.randint(2, 60), Sampling(seed=index))
    scheduler.reserve(request)
    request.advance(RequestStatus.TRANSFERRING)
    scheduler.add(request, None)
    return request


def churn(
    scheduler: DecodeScheduler, rng: random.Random, requests: list[Request], step: int,
    when: tuple[int, int, int], first_id: int,
) -> None:  # fmt: skip
    """One step's arrivals and cancellations: `when` = (join every n steps, cancel every m steps, at
    step k mod m); the cancelled sequence is a random running one."""
    join_every, cancel_every, cancel_at = when
    if step % join_every == 0:
        requests.append(admit(scheduler, rng, first_id + step))
    if step % cancel_every == cancel_at:
        running = [r for rank in scheduler.running for r in rank]
        if running:
            scheduler.cancel(rng.choice(running))


def test_loads_and_price_match_every_sequence_over_a_busy_run():
    dep = DecodeDeployment(ep_size=320)
    scheduler, rng = make_scheduler(), random.Random(3)
    requests = [admit(scheduler, rng, i) for i in range(30)]
    for step in range(120):
        churn(scheduler, rng, requests, step, (7, 11, 5), 100)
        batch = scheduler.schedule()
        if batch is None:
            break
        lens = batch.rank_kv_lens()
        assert scheduler.loads.num_seqs.tolist() == [len(r) for r in lens]
        assert scheduler.loads.kv_sum.tolist() == [sum(r) for r in lens]
        assert step_cost_from_loads(dep, scheduler, batch) == hw_cost.decode_step_cost_ranks(dep, lens)
        ahead = min(3, scheduler.steps_until_change() - 1)
        future = [batch.kv_lens(rank, ahead) for rank in batch.ranks]
        assert scheduler.loads.kv_sum_at(ahead).tolist() == [sum(r) for r in future]
        expect = hw_cost.decode_step_cost_ranks(dep, future)
        assert step_cost_from_loads(dep, scheduler, batch, ahead) == expect
        scheduler.postprocess(batch)


def test_the_ring_grows_for_long_plans():
    loads = RankLoads(2, horizon=4)
    plan = list(range(1, 11))  # one token per step, 10 steps
    loads.join(1, 100, plan)
    for step in range(1, 11):
        loads.advance(step)
        assert loads.kv_sum.tolist() == [0, 100 + step if step < 10 else 0]


def test_busiest_rank_is_the_first_with_most_work():
    n = np.array([0, 2, 3, 3, 1, 2])
    k = np.array([0, 900, 500, 500, 5000, 100])
    work = lambda s, kv: s * 100.0 + kv  # noqa: E731
    expect = max(range(len(n)), key=lambda r: work(n[r], k[r]) if n[r] else -1)
    assert busiest_rank(n, k, work) == expect == 4
    assert busiest_rank(np.zeros(3, int), np.zeros(3, int), work) == -1
    assert busiest_rank(np.array([3, 3]), np.array([7, 7]), work) == 0


@pytest.mark.parametrize("num_ranks", [6, 16, 17, 320])  # a few active ranks (plain Python) and many (numpy)
def test_busiest_rank_agrees_with_pricing_every_rank(num_ranks: int):
    rng = np.random.default_rng(num_ranks)
    work = lambda s, kv: s * 100.0 + kv  # noqa: E731  (increasing in both, as attention is)
    for _ in range(200):
        n = rng.integers(0, 4, num_ranks) * (rng.random(num_ranks) < 0.7)
        k = np.where(n > 0, rng.integers(1, 6, num_ranks) * 100, 0)  # coarse: many ties
        active = [r for r in range(num_ranks) if n[r]]
        expect = max(active, key=lambda r: (work(n[r], k[r]), -r)) if active else -1
        assert busiest_rank(n, k, work) == expect


@pytest.mark.parametrize("first,last,num", [(10.0, 10.0, 1), (10.0, 12.0, 5), (20.0, 11.0, 9)])
def test_a_run_of_steps_ends_where_its_steps_add_up(first: float, last: float, num: int):
    run = StepRun(first, last, num)
    steps = [first + (last - first) * i / max(1, num - 1) for i in range(num)]
    ends = list(np.cumsum(steps))
    assert [run.end_us(j) for j in range(1, num + 1)] == pytest.approx(ends)
    for j, end in enumerate(ends, start=1):
        assert run.steps_by(end) == j and run.steps_by(end - 1e-6) == j


@pytest.mark.parametrize("num_dies,num_requests", [(8, 30), (100, 160)])  # few busy ranks, and many
def test_reading_only_busy_ranks_matches_every_rank(num_dies: int, num_requests: int):
    """The loads, the context ahead and the busiest rank stay those of every sequence through joins,
    cancels and runs of several steps, with few busy ranks and with many."""
    scheduler, rng = (
        DecodeScheduler(num_dies, 6, 1 << 20, 1 << 10, mtp_depth=1, mtp_accept=0.7),
        random.Random(5),
    )
    requests = [admit(scheduler, rng, i) for i in range(num_requests)]
    work = lambda s, kv: s * 100.0 + kv  # noqa: E731
    busy_counts = set()
    for step in range(200):
        churn(scheduler, rng, requests, step, (5, 9, 4), 1000)
        batch = scheduler.schedule()
        if batch is None:
            break
        loads = scheduler.loads
        assert batch.max_batch_per_die == max(len(rank) for rank in scheduler.running)
        assert batch.num_seqs == scheduler.num_running == sum(len(rank) for rank in scheduler.running)
        busy_counts.add(int(np.count_nonzero(loads.num_seqs)) > 64)
        ahead = min(rng.randint(0, 20), scheduler.steps_until_change() - 1)
        future = [batch.kv_lens(rank, ahead) for rank in batch.ranks]
        assert loads.kv_sum_at(ahead).tolist() == [sum(r) for r in future]
        assert loads.busiest(ahead, work) == busiest_rank(loads.num_seqs, loads.kv_sum_at(ahead), work)
        scheduler.postprocess(replace(batch, num_steps=ahead + 1))
        after = [sum(batch.kv_lens(tuple(rank), ahead + 1)) for rank in scheduler.running]
        assert loads.kv_sum.tolist() == after
    assert busy_counts == ({False} if num_dies == 8 else {True, False})


def test_clearing_the_batches_resets_what_the_scheduler_counts():
    scheduler, rng = make_scheduler(), random.Random(9)
    for i in range(20):
        admit(scheduler, rng, i)
    batch = scheduler.schedule()
    assert batch is not None and scheduler.num_running == batch.num_seqs > 0
    scheduler.clear_running()  # the step loop failed: its requests were failed and dropped
    assert scheduler.num_running == 0 and scheduler.schedule() is None
    admit(scheduler, rng, 99)
    after = scheduler.schedule()
    assert after is not None and after.num_seqs == after.max_batch_per_die == scheduler.num_running == 1
