"""Operator-level checks: Table 6 reproduced, roofline never beats the peaks, paper buffer sizes."""

from __future__ import annotations

import pytest

from supernode.hw import calibration as cal
from supernode.hw import comm, memory
from supernode.hw.decode import step_works
from supernode.hw.roofline import compute_us, memory_us, time_us
from supernode.hw.specs import ASCEND_910C, H800, KV_BYTES_PER_TOKEN, paper_decode

REF_MSGS = 128 * 8


@pytest.mark.parametrize("row", cal.CM384_DISPATCH.value)
def test_dispatch_reproduces_table6(row: tuple[int, float, float]) -> None:
    ep, latency, _ = row
    assert comm.dispatch_us(ASCEND_910C, ep, REF_MSGS) == pytest.approx(latency, rel=0.02)


@pytest.mark.parametrize("row", cal.CM384_COMBINE.value)
def test_combine_reproduces_table6(row: tuple[int, float, float]) -> None:
    ep, latency, _ = row
    assert comm.combine_us(ASCEND_910C, ep, REF_MSGS) == pytest.approx(latency, rel=0.02)


def test_h800_deepep_is_slower_than_cm384() -> None:
    assert comm.combine_us(H800, 256, REF_MSGS) > 2 * comm.combine_us(ASCEND_910C, 256, REF_MSGS)


def test_dispatch_grows_with_tokens_and_never_beats_the_link() -> None:
    hw = ASCEND_910C
    times = [comm.dispatch_us(hw, 320, n * 9) for n in (1, 8, 64, 512)]
    assert times == sorted(times)
    for n in (8, 64, 512):
        msgs = n * 9
        assert msgs * hw.dispatch_msg_bytes / (comm.dispatch_us(hw, 320, msgs) * 1e-6) <= 196e9


@pytest.mark.parametrize("batch", [1, 4, 48, 128])
def test_no_operator_beats_its_peak(batch: int) -> None:
    hw = ASCEND_910C
    for work in step_works(paper_decode(), batch, 4096):
        t_s = time_us(hw, work) * 1e-6
        peak = hw.int8_ops_per_s if work.precision == "int8" and work.kind == "gemm" else hw.bf16_flops_per_s
        assert work.flops <= peak * t_s * (1 + 1e-9), work.part
        assert work.bytes <= hw.hbm_bytes_per_s * t_s * (1 + 1e-9), work.part


def test_batch_one_decode_is_memory_bound() -> None:
    works = step_works(paper_decode(), 1, 4096)
    mem = sum(memory_us(ASCEND_910C, w) for w in works)
    comp = sum(compute_us(ASCEND_910C, w) for w in works)
    assert mem > 3 * comp


def test_paper_comm_buffers_and_kv_size() -> None:
    assert KV_BYTES_PER_TOKEN == 70_272
    # [v3] §4.2.1: 225 + 420 "MB" (MiB) for EP320 and 96 tokens per die.
    assert memory.comm_buffer_bytes(paper_decode(), 48) / 2**20 == pytest.approx(645, rel=0.01)
