"""core/scoring_jobs.py and the cost model's lm_head_tokens: scoring jobs in the prefill batcher."""

from __future__ import annotations

import pytest

from supernode.core.request import Request
from supernode.core.scheduler import QueueFullError
from supernode.core.scoring_jobs import TieredPrefillScheduler, lm_head_tokens, scoring_share
from supernode.hw import cost as hw_cost
from supernode.runtime.config import Settings
from supernode.runtime.deployments import prefill_deployment


def PrefillJob(request_id: str, num_tokens: int, num_cached: int) -> Request:  # noqa: N802
    request = Request(request_id, [300] * num_tokens, 1)
    request.num_cached_tokens = num_cached
    return request


def ScoringJob(request_id: str, num_tokens: int, num_cached: int, num_question: int = 1) -> Request:  # noqa: N802
    job = PrefillJob(request_id, num_tokens, num_cached)
    job.num_question = num_question
    return job


def test_low_priority_scoring_only_fills_what_interactive_prefill_leaves():
    sched = TieredPrefillScheduler(1000, 10, 10, "low")
    sched.add_scoring(ScoringJob("s1", 600, 0, num_question=10))
    sched.add(PrefillJob("p1", 700, 0))
    batch = sched.schedule()
    assert batch is not None
    assert [(s.request.request_id, s.num_new) for s in batch.slices] == [("p1", 700), ("s1", 300)]
    sched.postprocess(batch)
    batch = sched.schedule()
    assert batch is not None and [(s.request.request_id, s.num_new) for s in batch.slices] == [("s1", 300)]
    assert sched.postprocess(batch)[0].request_id == "s1" and sched.schedule() is None


def test_normal_priority_is_fifo_with_interactive_prefill():
    sched = TieredPrefillScheduler(1000, 10, 10, "normal")
    sched.add_scoring(ScoringJob("s1", 600, 0, num_question=10))
    sched.add(PrefillJob("p1", 700, 0))
    batch = sched.schedule()
    assert batch is not None and [s.request.request_id for s in batch.slices] == ["s1", "p1"]


def test_the_scoring_queue_is_bounded():
    sched = TieredPrefillScheduler(1000, 10, 1, "low")
    sched.add_scoring(ScoringJob("s1", 10, 0))
    with pytest.raises(QueueFullError):
        sched.add_scoring(ScoringJob("s2", 10, 0))


def test_vocabulary_projection_only_at_question_positions_of_the_slice():
    sched = TieredPrefillScheduler(1000, 10, 10, "low")
    sched.add(PrefillJob("p1", 900, 0))
    sched.add_scoring(ScoringJob("s1", 164, 0, num_question=64))  # 100 segment + 64 question
    first = sched.schedule()
    assert first is not None and lm_head_tokens(first.slices) == [1, 0]  # the job's first 100 tokens
    sched.postprocess(first)
    second = sched.schedule()
    assert second is not None and lm_head_tokens(second.slices) == [64]
    assert scoring_share(first.slices) == pytest.approx(100 / 1000)


def test_cost_model_charges_the_lm_head_per_projected_position():
    dep = prefill_deployment(Settings().prefill)
    one = hw_cost.prefill_batch_cost(dep, [4000], [0])
    same = hw_cost.prefill_batch_cost(dep, [4000], [0], lm_head_tokens=[1])
    many = hw_cost.prefill_batch_cost(dep, [4000], [0], lm_head_tokens=[64])
    assert one.total_us == same.total_us
    assert many.breakdown_us["lm_head"] > one.breakdown_us["lm_head"]
    # With SP the projected positions sit on the dies that hold them: the last die's chunk at most.
    every = hw_cost.prefill_batch_cost(dep, [4000], [0], lm_head_tokens=[4000])
    assert every.total_us >= many.total_us > one.total_us
    with pytest.raises(ValueError, match="lm_head_tokens"):
        hw_cost.prefill_batch_cost(dep, [1, 2], [0, 0], lm_head_tokens=[1])
