"""One test per structural mechanism of the cost model (issue: chained overlap, vector ops, Table 6
split, shared HBM, mode choice, NVIDIA presets, EPLB, MTP, live pricing)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from supernode.hw import calibration as cal
from supernode.hw import comm, ops
from supernode.hw.cost import (
    decode_step_cost,
    decode_step_cost_ranks,
    prefill_batch_cost,
    prefill_tokens_per_s_per_npu,
)
from supernode.hw.mtp import accepted_drafts, expected_tokens_per_step
from supernode.hw.paper import deployments
from supernode.hw.prefill import prefill_chain_us
from supernode.hw.prefill_shape import shape
from supernode.hw.roofline import Share, time_us
from supernode.hw.specs import ASCEND_910C, H800, paper_decode, paper_prefill
from supernode.hw.stages import Stage, attn_stage, pair_us


def test_prefill_layer_is_a_chained_pipeline_not_a_free_overlap() -> None:
    # per microbatch: compute 10, comm 10, compute 10, comm 10 (us)
    steps = [(False, {"a": 10.0}), (True, {"b": 10.0}), (False, {"c": 10.0}), (True, {"d": 10.0})]
    dep = paper_prefill()
    one = prefill_chain_us(dep, steps, 1, 1)
    two = prefill_chain_us(dep, steps, 2, 1)
    assert one == 40.0  # a single microbatch waits for each predecessor
    free_overlap = max(2 * 20.0, 2 * 20.0, 20.0 + 20.0)  # the old max(n*comp, n*comm, comp+comm)
    assert two == 50.0 > free_overlap  # mb1's last comm waits for mb0's; the chain exposes the tail
    assert two < 2 * one  # but the two microbatches do overlap


def test_vector_ops_are_named_bandwidth_bound_and_grow_with_tokens() -> None:
    m, hw = paper_decode().model, ASCEND_910C
    small, large = ops.vector_attn(m, 10), ops.vector_attn(m, 20)
    assert small.flops == 0 and large.bytes == pytest.approx(2 * small.bytes)
    rate = hw.hbm_bytes_per_s * hw.mem_eff
    assert time_us(hw, large) == pytest.approx(large.bytes / rate * 1e6)
    step = decode_step_cost(paper_decode(), 48, [4096] * 48)
    batch = prefill_batch_cost(paper_prefill(), [4096] * 64, [0] * 64)
    assert step.busy_us["vector_ops"] > 0 and batch.busy_us["vector_ops"] > 0


@pytest.mark.parametrize("row", cal.CM384_DISPATCH.value + cal.CM384_COMBINE.value)
def test_table6_splits_into_fixed_plus_bytes_at_the_ub_write_rate(row: tuple[int, float, float]) -> None:
    ep, latency, _ = row
    is_dispatch = row in cal.CM384_DISPATCH.value
    msg = ASCEND_910C.dispatch_msg_bytes if is_dispatch else ASCEND_910C.combine_msg_bytes
    link = cal.UB_WRITE_NPU_INTER_BYTES_PER_S.value
    per_byte = 128 * 8 * msg / link * 1e6
    table = ASCEND_910C.dispatch_table if is_dispatch else ASCEND_910C.combine_table
    fixed = comm.fixed_us(table, msg, link, ep)
    assert fixed == pytest.approx(latency - per_byte)
    assert fixed > 5.0  # not the ~0 that bytes over the table's own bandwidth column gives
    fn = comm.dispatch_us if is_dispatch else comm.combine_us
    assert fn(ASCEND_910C, ep, 1024) == pytest.approx(latency)
    assert fn(ASCEND_910C, ep, 2048) - fn(ASCEND_910C, ep, 1024) == pytest.approx(per_byte)


def test_hbm_is_shared_by_whoever_runs_and_cores_are_split() -> None:
    dep = paper_decode()
    m, hw = dep.model, dep.hardware
    weights = ops.o_proj_decode(m, 8, "int8")  # memory-bound
    assert time_us(hw, weights, Share(1 / 3)) == pytest.approx(time_us(hw, weights))  # alone: all of HBM
    big = ops.experts(m, 4096, 1, "int8")  # compute-bound
    assert time_us(hw, big, Share(1 / 3)) == pytest.approx(3 * time_us(hw, big))  # a third of the AIC
    a = Stage((("x", 100.0),), 80.0, 0.0, 100.0)
    b = Stage((("y", 90.0),), 70.0, 0.0, 90.0)
    assert pair_us(a, b, hw) == pytest.approx(150.0)  # together they share HBM: 80 + 70
    assert pair_us(a, b, H800) == pytest.approx(190.0)  # time-shared SMs: core work adds up too


def test_mode_and_split_are_chosen_per_step_and_can_be_forced() -> None:
    dep = paper_decode()
    small = decode_step_cost(dep, 2, [4096] * 2)
    big = decode_step_cost(dep, 48, [4096] * 48)
    assert small.mode == "single" and small.aic_split is None
    assert big.mode == "microbatch" and big.aic_split is not None and 1 <= big.aic_split < 24
    forced = decode_step_cost(dep, 48, [4096] * 48, microbatch=False)
    assert forced.mode == "single" and forced.total_us >= big.total_us
    fixed_split = dataclasses.replace(dep, aic_split=16)
    assert decode_step_cost(fixed_split, 48, [4096] * 48, microbatch=True).aic_split == 16
    assert decode_step_cost(dep, 1, [4096], microbatch=True).mode == "single"  # one sequence cannot split
    longer = decode_step_cost(dep, 48, [32768] * 48, microbatch=True)
    assert longer.aic_split is not None and longer.aic_split >= big.aic_split  # more attention, more AIC


def test_nvidia_prefill_uses_deepep_normal_kernels_and_reserves_sms() -> None:
    assert comm.rdma_copies_per_token(4, 8) == pytest.approx(3 * (1 - 0.75**8))
    assert comm.rdma_copies_per_token(1, 8) == 0.0
    assert H800.dies_per_device == 1 and H800.prefill_comm_cores == 24 and not H800.splits_cores
    pre = dataclasses.replace(paper_prefill(), num_npus=32, dies_per_npu=1, ep_size=32, hardware=H800)
    no_reserve = dataclasses.replace(pre, hardware=dataclasses.replace(H800, prefill_comm_cores=0))
    assert prefill_tokens_per_s_per_npu(no_reserve) > prefill_tokens_per_s_per_npu(pre)
    # Decode keeps the low-latency kernels of Table 6's DeepEP column.
    assert comm.dispatch_us(H800, 256, 1024) == pytest.approx(194.0)


def test_default_eplb_factor_reproduces_the_ratio_it_was_fitted_on() -> None:
    pre, default, _ = deployments()
    ratio = prefill_tokens_per_s_per_npu(default) / prefill_tokens_per_s_per_npu(pre)
    assert ratio == pytest.approx(5655 / 6688, rel=2e-3)


def test_mtp_has_one_definition_for_pricing_and_scheduling() -> None:
    assert expected_tokens_per_step(0, 0.7) == 1.0
    assert expected_tokens_per_step(1, 0.7) == pytest.approx(1.7)
    assert expected_tokens_per_step(3, 0.7) == pytest.approx(1 + 0.7 + 0.49 + 0.343)  # not 1 + 3 x 0.7
    rng = random.Random(7)
    draws = [1 + accepted_drafts(3, 0.7, rng.random) for _ in range(40_000)]
    assert sum(draws) / len(draws) == pytest.approx(expected_tokens_per_step(3, 0.7), rel=0.01)
    dep = dataclasses.replace(paper_decode(), mtp_depth=2, mtp_accept=0.6)
    assert dep.tokens_per_step == pytest.approx(1.96)
    with pytest.raises(ValueError):
        expected_tokens_per_step(1, 1.5)


def test_live_pricing_uses_the_busiest_rank_by_work_and_the_real_token_count() -> None:
    dep = paper_decode()
    uniform = decode_step_cost_ranks(dep, [[4096] * 16] * 4)
    assert uniform.total_us == pytest.approx(decode_step_cost(dep, 16, [4096] * 16).total_us)
    # Fewer sequences but far longer contexts: that rank is the busiest.
    long_rank = decode_step_cost_ranks(dep, [[4096] * 16, [65536] * 12])
    assert long_rank.total_us > decode_step_cost_ranks(dep, [[4096] * 16, [4096] * 12]).total_us
    # Idle ranks lower the global token count, so the MoE side gets cheaper.
    lonely = decode_step_cost_ranks(dep, [[4096] * 16, [], [], []])
    assert lonely.busy_us["combine"] < uniform.busy_us["combine"]
    assert lonely.total_us < uniform.total_us
    assert decode_step_cost_ranks(dep, [[], []]).total_us == 0.0
    with pytest.raises(ValueError):
        decode_step_cost_ranks(dep, [])


def test_prefill_prices_lm_head_positions_and_sp_stragglers() -> None:
    dep = paper_prefill()
    one = prefill_batch_cost(dep, [4096] * 4, [0] * 4)
    many = prefill_batch_cost(dep, [4096] * 4, [0] * 4, lm_head_tokens=[512] * 4)
    assert many.busy_us["lm_head"] > 2 * one.busy_us["lm_head"]  # weights read once, compute grows
    none = prefill_batch_cost(dep, [4096] * 4, [0] * 4, lm_head_tokens=[0] * 4)
    assert "lm_head" not in none.busy_us
    with pytest.raises(ValueError):
        prefill_batch_cost(dep, [10], [0], lm_head_tokens=[11])
    even = shape(dep, [32 * 100], [0])
    uneven = shape(dep, [32 * 100 + 1], [0])
    assert even.tokens == 100 and uneven.tokens == 101  # the full chunks are the stragglers
    assert prefill_batch_cost(dep, [3201], [0]).total_us >= prefill_batch_cost(dep, [3200], [0]).total_us


def test_attention_stage_grows_with_context_and_sequences() -> None:
    dep = paper_decode()
    assert attn_stage(dep, 4, 4 * 8192.0, 1.0).total_us > attn_stage(dep, 4, 4 * 4096.0, 1.0).total_us
    assert attn_stage(dep, 8, 8 * 4096.0, 1.0).total_us > attn_stage(dep, 4, 4 * 4096.0, 1.0).total_us
