"""Physical sanity of the cost model: monotone, non-negative parts that sum, memory within HBM."""

from __future__ import annotations

import dataclasses
import random

import pytest

from supernode.hw import memory, ops
from supernode.hw.cost import (
    attention_work,
    decode_step_cost,
    decode_step_cost_ranks,
    kv_capacity_tokens_per_die,
    max_batch_per_die_for_tpot,
    prefill_batch_cost,
    tpot_ms,
)
from supernode.hw.prefill import prefill_moe_layer_cost
from supernode.hw.result import Cost
from supernode.hw.roofline import compute_us, memory_us
from supernode.hw.specs import HARDWARE, PrefillDeployment, fit_experts_per_die, paper_decode, paper_prefill


def _check_parts(cost: Cost) -> None:
    assert all(v >= 0 for v in cost.breakdown_us.values())
    assert sum(cost.breakdown_us.values()) == pytest.approx(cost.total_us, rel=1e-9)
    for name, t in cost.breakdown_us.items():
        assert cost.busy_us[name] >= t * (1 - 1e-9)


def test_deployments_replace_and_hash() -> None:
    dec = dataclasses.replace(paper_decode(), mtp_depth=0)
    assert dec.mtp_depth == 0 and dec.ep_size == 320 and dec.num_npus == 160
    pre = dataclasses.replace(paper_prefill(), num_npus=8, ep_size=16, experts_per_die=19)
    assert hash(pre) != hash(paper_prefill())


def test_empty_batches_cost_nothing() -> None:
    assert decode_step_cost(paper_decode(), 0, []).total_us == 0.0
    assert prefill_batch_cost(paper_prefill(), [], []).total_us == 0.0


@pytest.mark.parametrize("microbatch", [False, True, None])
@pytest.mark.parametrize("mtp_depth", [0, 1])
def test_decode_time_grows_with_batch(microbatch: bool | None, mtp_depth: int) -> None:
    dep = dataclasses.replace(paper_decode(), microbatch=microbatch, mtp_depth=mtp_depth)
    times = [decode_step_cost(dep, b, [4096] * b).total_us for b in range(1, 97)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))


@pytest.mark.parametrize("microbatch", [False, True, None])
def test_decode_time_grows_with_context(microbatch: bool | None) -> None:
    for batch in (2, 16, 48):
        kvs = (1, 512, 4096, 4200, 32768, 131072)
        times = [
            decode_step_cost(paper_decode(), batch, [kv] * batch, microbatch=microbatch).total_us
            for kv in kvs
        ]
        assert times == sorted(times)


@pytest.mark.parametrize("mtp_depth", [0, 1, 2])
def test_the_chosen_mode_is_never_slower_than_a_forced_one(mtp_depth: int) -> None:
    dep = dataclasses.replace(paper_decode(), mtp_depth=mtp_depth)
    for batch in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96):
        for kv in (256, 4096, 16384):
            kvs = [kv + 7 * i for i in range(batch)]
            chosen = decode_step_cost(dep, batch, kvs)
            for forced in (False, True):
                other = decode_step_cost(dep, batch, kvs, microbatch=forced)
                assert chosen.total_us <= other.total_us * (1 + 1e-12), (batch, kv, forced)


def test_prefill_time_grows_with_tokens_and_context() -> None:
    dep = paper_prefill()
    by_len = [prefill_batch_cost(dep, [n] * 32, [0] * 32).total_us for n in (128, 1024, 4096, 16384)]
    assert by_len == sorted(by_len)
    by_seqs = [prefill_batch_cost(dep, [4096] * k, [0] * k).total_us for k in (1, 8, 32, 64, 128)]
    assert by_seqs == sorted(by_seqs)
    by_prefix = [prefill_batch_cost(dep, [1024] * 32, [c] * 32).total_us for c in (0, 4096, 32768)]
    assert by_prefix == sorted(by_prefix)


def test_parts_are_non_negative_and_sum_to_total() -> None:
    _check_parts(decode_step_cost(paper_decode(), 48, [4096] * 48))
    _check_parts(decode_step_cost(paper_decode(), 3, [10, 200, 4096], microbatch=False))
    _check_parts(decode_step_cost(paper_decode(), 3, [10, 200, 4096], microbatch=True))
    _check_parts(prefill_batch_cost(paper_prefill(), [4096] * 64, [0] * 64))
    _check_parts(
        prefill_batch_cost(dataclasses.replace(paper_prefill(), attention="dp"), [100, 3000], [50, 0])
    )
    _check_parts(prefill_moe_layer_cost(paper_prefill(), [4096] * 64, [0] * 64))


def test_long_prefill_is_compute_bound() -> None:
    m, hw = paper_prefill().model, paper_prefill().hardware
    tokens = 8192.0
    works = [
        ops.mla_prolog_prefill(m, tokens, tokens * 32, 0.0, 1 / 32, "int8"),
        ops.attention_prefill(m, 2 * 4096 * 4097 / 2, tokens, 1.0),
        ops.o_proj_prefill(m, tokens, "int8"),
        ops.experts(m, tokens * 9, 10, "int8"),
    ]
    for work in works:
        assert compute_us(hw, work) > memory_us(hw, work), work.part


def test_slo_batch_meets_slo_and_fits_in_hbm() -> None:
    dep = paper_decode()
    for slo in (15.0, 30.0, 50.0, 200.0):
        batch = max_batch_per_die_for_tpot(dep, 4096, slo)
        if batch:
            assert tpot_ms(dep, batch, 4096) <= slo
            assert memory.decode_memory_bytes(dep, batch, 4096) <= 64e9
    assert max_batch_per_die_for_tpot(dep, 4096, 0.1) == 0
    assert max_batch_per_die_for_tpot(dep, 4096, 1e9) == memory.max_batch_by_memory(dep, 4096)


def test_kv_capacity_and_memory_model() -> None:
    dep = paper_decode()
    cap = kv_capacity_tokens_per_die(dep)
    assert 48 * 4096 < cap < 64e9 / 70_272
    assert memory.decode_memory_bytes(dep, 48, 4096) < 64e9
    assert memory.prefill_memory_bytes(paper_prefill(), 8192, 8192) < 64e9


def test_bad_placement_is_rejected() -> None:
    with pytest.raises(ValueError):
        decode_step_cost(dataclasses.replace(paper_decode(), ep_size=160), 4, [100] * 4)
    with pytest.raises(ValueError):
        decode_step_cost(paper_decode(), 2, [100])


@pytest.mark.parametrize("name", sorted(HARDWARE))
def test_every_hardware_preset_prices(name: str) -> None:
    hw = HARDWARE[name]
    dies = 2 if name == "ascend-910c" else 1
    dec = dataclasses.replace(paper_decode(), hardware=hw, num_npus=320 // dies, dies_per_npu=dies)
    assert decode_step_cost(dec, 16, [4096] * 16).total_us > 0
    pre = PrefillDeployment(num_npus=32 // dies, dies_per_npu=dies, hardware=hw)
    assert prefill_batch_cost(pre, [4096] * 16, [0] * 16).total_us > 0


def test_int8_is_faster_than_bf16() -> None:
    bf16 = dataclasses.replace(paper_decode(), attn_precision="bf16", moe_precision="bf16")
    assert tpot_ms(bf16, 8, 4096) > tpot_ms(paper_decode(), 8, 4096)


def test_fit_experts_per_die_matches_the_paper() -> None:
    assert fit_experts_per_die(320, 32, shared_local=False) == 1
    assert fit_experts_per_die(32, 32, shared_local=True) == 10
    dep = dataclasses.replace(paper_decode(), ep_size=64, experts_per_die=fit_experts_per_die(64, 32, False))
    assert decode_step_cost(dep, 8, [1000] * 8).total_us > 0


def test_live_ranks_pricing_is_well_formed_and_grows_with_load() -> None:
    dep = paper_decode()
    rng = random.Random(3)
    for _ in range(40):
        ranks = [
            [rng.randint(1, 20_000) for _ in range(rng.randint(0, 40))] for _ in range(rng.randint(1, 4))
        ]
        if not any(ranks):
            continue
        cost = decode_step_cost_ranks(dep, ranks)
        _check_parts(cost)
        busiest = max(ranks, key=lambda r: attention_work(dep, r))
        grown = [list(r) for r in ranks]
        grown[ranks.index(busiest)].append(rng.randint(1, 20_000))
        assert decode_step_cost_ranks(dep, grown).total_us >= cost.total_us * (1 - 1e-9)
