"""The router's first-token queueing bound (runtime/start_delay.py), on a hand-driven clock."""

from __future__ import annotations

import grpc
import pytest

from supernode.runtime.admission import ShedError
from supernode.runtime.config import RouterSettings
from supernode.runtime.start_delay import CONGESTION_WINDOW_S, QUEUED_KEY, StartDelayBound, queued_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def serve_alone(bound: StartDelayBound, clock: Clock, ttft_s: float) -> None:
    ticket = bound.admit()
    clock.now += ttft_s
    bound.on_first_token(ticket)
    bound.on_end(ticket)


def served_once(max_delay_s: float = 0.3, alone_s: float = 0.1) -> tuple[StartDelayBound, Clock]:
    """A bound that has seen one request served alone, `alone_s` to its first token."""
    clock = Clock()
    bound = StartDelayBound(max_delay_s, clock)
    serve_alone(bound, clock, alone_s)
    return bound, clock


def test_before_any_first_token_everything_is_admitted():
    bound = StartDelayBound(0.1, Clock())
    tickets = [bound.admit() for _ in range(50)]
    assert bound.num_starting == 50 and bound.estimate_s() is None
    for ticket in tickets:
        bound.on_end(ticket)
    assert bound.num_starting == 0


def test_a_burst_after_serial_service_is_admitted_as_far_as_serial_service_fits():
    bound, clock = served_once()  # one request alone: 0.1 s to its first token
    admitted = [bound.admit() for _ in range(4)]  # 0, 1, 2 and 3 ahead: waits 0 .. 0.3 s
    with pytest.raises(ShedError) as err:
        bound.admit()  # 4 ahead x 0.1 s = 0.4 s > 0.3 s: refused at once
    assert err.value.reason == "queue_delay" and err.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.retry_after_s == 0.5 and "estimated wait for a first token 0.40s" in err.value.message
    assert bound.num_starting == 4  # a refusal holds nothing
    for ticket in admitted:
        bound.on_end(ticket)


def test_the_interval_between_first_tokens_under_a_backlog_replaces_the_serial_guess():
    bound, clock = served_once()
    tickets = [bound.admit() for _ in range(4)]
    for ticket in tickets:  # batched: first tokens 20 ms apart
        clock.now += 0.02
        bound.on_first_token(ticket)
    assert bound.interval_s == pytest.approx(0.02)  # gaps measured while others were still starting
    assert bound.estimate_s(10) == pytest.approx(0.2)  # 10 ahead x the interval, not x alone_s
    more = [bound.admit() for _ in range(16)]  # 15 ahead x 20 ms = 0.3 s: still within the bound
    with pytest.raises(ShedError):
        bound.admit()
    for ticket in more:
        bound.on_end(ticket)


def test_first_tokens_slower_than_alone_refuse_new_requests_until_the_window_passes():
    bound, clock = served_once()
    tickets = [bound.admit() for _ in range(2)]
    clock.now += 0.5  # a host busy with running streams: first tokens 0.5 s after arrival, not 0.1 s
    for ticket in tickets:
        bound.on_first_token(ticket)
    assert bound.num_starting == 0 and bound.congestion_s() == pytest.approx(0.32)  # 0.5 - EWMA alone 0.18
    with pytest.raises(ShedError):
        bound.admit()  # nobody ahead, but even the least-delayed recent request waited 0.32 s extra
    clock.now += CONGESTION_WINDOW_S + 0.01
    assert bound.congestion_s() is None
    bound.admit()  # the slow first tokens are forgotten: admission resumes by itself


def test_ending_without_a_first_token_frees_the_place_and_teaches_nothing():
    bound, clock = served_once(0.15)
    ticket = bound.admit()
    bound.admit()
    with pytest.raises(ShedError):
        bound.admit()
    clock.now += 5.0
    bound.on_end(ticket)  # failed downstream: the one behind it moves up, no sample taken
    assert bound.num_starting == 1 and bound.alone_s == pytest.approx(0.1) and bound.interval_s is None
    bound.admit()


def test_time_already_waited_upstream_counts_against_the_bound():
    clock = Clock()
    bound = StartDelayBound(0.3, clock)
    with pytest.raises(ShedError):
        bound.admit(queued_s=0.4)  # waited past the bound in a gateway: refused even with nothing known
    serve_alone(bound, clock, 0.1)
    ticket = bound.admit(queued_s=0.1)
    with pytest.raises(ShedError) as err:
        bound.admit(queued_s=0.25)  # 0.25 s upstream + 1 ahead x 0.1 s = 0.35 s
    assert "0.35s" in err.value.message
    bound.on_end(ticket)


def test_a_process_whose_loop_is_behind_counts_that_lag_against_the_bound():
    clock = Clock()
    lag = [0.4]
    bound = StartDelayBound(0.3, clock, loop_lag=lambda: lag[0])
    with pytest.raises(ShedError) as err:
        bound.admit()  # nothing measured, nothing ahead: the loop's 0.4 s alone exceed the bound
    assert "0.40s" in err.value.message
    lag[0] = 0.1
    with pytest.raises(ShedError) as err:
        bound.admit(queued_s=0.25)  # 0.25 s upstream + 0.1 s behind here
    assert "0.35s" in err.value.message
    lag[0] = 0.0
    serve_alone(bound, clock, 0.1)  # caught up: admitted again


def test_queued_metadata_is_read_defensively():
    assert queued_s([("other", "1"), (QUEUED_KEY, "0.25")]) == 0.25
    assert queued_s([(QUEUED_KEY, "soon")]) == 0.0
    assert queued_s([(QUEUED_KEY, "-1")]) == 0.0 and queued_s([(QUEUED_KEY, "nan")]) == 0.0
    assert queued_s([(QUEUED_KEY, "1e9")]) == 0.0 and queued_s(None) == 0.0


def test_zero_is_no_bound_and_negative_is_rejected_with_the_field():
    bound, clock = served_once(0.0, 1.0)
    for _ in range(100):
        bound.admit()
    with pytest.raises(ValueError, match="max_delay_s"):
        StartDelayBound(-1.0)
    with pytest.raises(ValueError, match="max_queue_delay_s"):
        RouterSettings(max_queue_delay_s=-0.5)
    assert RouterSettings().max_queue_delay_s == 0.0


def test_first_tokens_released_together_count_as_a_batch_not_as_zero_gaps():
    """A prefill batch's first tokens go out at once, due at its end: 8 together every 0.16 s is
    20 ms per token, as 8 tokens 20 ms apart would be."""
    bound, clock = served_once(max_delay_s=0.0)  # counted, never refused
    tickets = [bound.admit() for _ in range(3)]
    more = []
    for _ in range(4):  # keep a backlog: 8 more start for every batch of 8 first tokens
        more += [bound.admit() for _ in range(8)]
        clock.now += 0.16
        for ticket in (tickets + more)[:8]:
            bound.on_first_token(ticket)
        tickets, more = [t for t in tickets + more if t.is_open], []
        assert bound.interval_s is not None and bound.interval_s > 0.015, "the batch's length stays in"
    assert bound.interval_s == pytest.approx(0.02, rel=0.15)
    for ticket in tickets:
        bound.on_end(ticket)
