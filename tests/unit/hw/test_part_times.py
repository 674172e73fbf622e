"""SerialPartTimes: the same cost as PartTimes for parts that never overlap, from half the sums."""

from __future__ import annotations

import random

import pytest

from supernode.hw import decode as hw_decode
from supernode.hw.result import PartTimes, SerialPartTimes
from supernode.hw.specs import DecodeDeployment


def test_serial_parts_cost_what_part_times_does():
    rng = random.Random(1)
    full, serial = PartTimes(), SerialPartTimes()
    for _ in range(200):
        name, t, count = (
            rng.choice(["attention", "experts", "lm_head", "custom"]),
            rng.random(),
            rng.randint(1, 61),
        )
        full.add(name, t, count)
        serial.add(name, t, count)
    a, b = full.cost("single"), serial.cost("single")
    assert a == b and list(a.breakdown_us) == list(b.breakdown_us) and list(a.busy_us) == list(b.busy_us)
    with pytest.raises(TypeError):
        serial.add_overlapped({"attention": 1.0}, 0.5)


@pytest.mark.parametrize("num_seqs", [1, 2, 7])
def test_a_single_batch_step_is_busy_for_exactly_its_exposed_time(num_seqs: int):
    dep = DecodeDeployment(ep_size=320)
    lens = [1000 + 37 * i for i in range(num_seqs)]
    cost = hw_decode.decode_step_ranks_cost(dep, lens, float(num_seqs), microbatch=False)
    assert cost.mode == "single" and cost.busy_us == cost.breakdown_us
    assert list(cost.busy_us) == list(cost.breakdown_us)
    # The microbatch mode overlaps its streams: there the busy times exceed what is exposed.
    if num_seqs >= 2:
        micro = hw_decode.decode_step_ranks_cost(dep, lens, float(num_seqs), microbatch=True)
        assert sum(micro.busy_us.values()) > micro.total_us


def test_a_single_batch_step_depends_on_its_sequences_and_their_total_context_alone():
    """Single mode prices the busiest rank from how many sequences it holds and their summed context
    (no split into microbatches): any lengths with that count and sum cost exactly the same."""
    dep = DecodeDeployment(ep_size=320)
    rng = random.Random(7)
    for _ in range(50):
        lens = [rng.randint(1, 100_000) for _ in range(rng.randint(1, 64))]
        cost = hw_decode.decode_step_ranks_cost(dep, lens, 12.5, microbatch=False)
        lumped = [sum(lens), *[0] * (len(lens) - 1)]
        assert hw_decode.decode_step_ranks_cost(dep, lumped, 12.5, microbatch=False) == cost
        assert hw_decode.decode_step_ranks_cost(dep, sorted(lens), 12.5, microbatch=False) == cost
