"""The per-step price is cheap (context-linear attention cached per shape, split searched per bucket) and
gives the same answer as pricing op by op and searching every split."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from supernode.hw import comm, ops
from supernode.hw import decode as decode_model
from supernode.hw.cost import decode_step_cost
from supernode.hw.decode import split_microbatches, stream_stages
from supernode.hw.roofline import Share, compute_us, memory_us
from supernode.hw.specs import H800, paper_decode
from supernode.hw.stages import attn_fixed, attn_stage, moe_stage

SHAPES = [(2, 4096), (4, 4096), (8, 1024), (16, 8192), (32, 2048), (48, 4096), (48, 4177), (64, 16384),
          (96, 4096), (48, 32768)]  # fmt: skip


@pytest.mark.parametrize("mtp", [0, 1])
@pytest.mark.parametrize("cube", [1.0, 16 / 24, 5 / 24])
def test_attention_stage_equals_op_by_op_pricing(mtp: int, cube: float) -> None:
    dep = dataclasses.replace(paper_decode(), mtp_depth=mtp)
    hw, q = dep.hardware, 1 + mtp
    for n, kv in ((1, 17), (24, 24 * 4096), (48, 48 * 30000.5)):
        work = ops.attention_decode(dep.model, n, kv, q)
        t = compute_us(hw, work, Share(cube), dep.tuning) + memory_us(hw, work, dep.tuning)
        fixed = attn_fixed(dep, n * q, cube)
        st = attn_stage(dep, n, kv, cube)
        assert dict(st.parts)["attention"] == pytest.approx(t, rel=1e-12)
        assert st.total_us == pytest.approx(fixed.total_us + t, rel=1e-12)
        rate = hw.hbm_bytes_per_s * hw.mem_eff
        assert st.hbm_us == pytest.approx(fixed.hbm_us + work.bytes / rate * 1e6, rel=1e-12)


@pytest.mark.parametrize("mtp", [0, 1])
@pytest.mark.parametrize(("batch", "kv"), SHAPES)
def test_searched_split_and_mode_equal_the_full_search(mtp: int, batch: int, kv: int) -> None:
    dep = dataclasses.replace(paper_decode(), mtp_depth=mtp)
    kv_lens = [kv + 37 * i for i in range(batch)]  # uneven contexts, not a bucket's representative
    chosen = decode_step_cost(dep, batch, kv_lens)
    every = {
        aic: decode_step_cost(dataclasses.replace(dep, aic_split=aic), batch, kv_lens, microbatch=True)
        for aic in range(1, dep.hardware.num_cube_cores)
    }
    single = decode_step_cost(dep, batch, kv_lens, microbatch=False)
    best = min([single.total_us, *(c.total_us for c in every.values())])
    assert chosen.total_us == pytest.approx(best, rel=1e-3)
    if chosen.mode == "microbatch":
        ranked = sorted(every, key=lambda a: every[a].total_us)
        gap = every[ranked[1]].total_us / every[ranked[0]].total_us - 1
        if gap > 1e-3:  # a clear winner: the pruned, bucketed search finds exactly it
            assert chosen.aic_split == ranked[0]


def test_the_aiv_cores_a_stream_owns_drive_its_dispatch_and_combine_bytes() -> None:
    hw = paper_decode().hardware
    for fn in (comm.dispatch_us, comm.combine_us):
        fixed = fn(hw, 256, 1e-9)
        full, third = fn(hw, 256, 432), fn(hw, 256, 432, 1 / 3)
        assert third - fixed == pytest.approx(3 * (full - fixed))  # bytes at a third of the rate
    nvidia = dataclasses.replace(paper_decode(), hardware=H800)
    assert moe_stage(nvidia, 48.0, 0.5).link_us == moe_stage(nvidia, 48.0, 1.0).link_us  # SMs time-share


def test_the_paper_point_balances_the_streams_at_its_16_8_split() -> None:
    dep = paper_decode()
    step = decode_step_cost(dep, 48, [4096] * 48)
    assert step.mode == "microbatch" and step.aic_split == 16  # [v3] §4.2.3: 16 AIC + 32 AIV / 8 + 16
    attn, moe = stream_stages(dep, 48, 4096, 16)
    assert attn.total_us == pytest.approx(600, rel=0.1) and moe.total_us == pytest.approx(600, rel=0.1)


def test_a_run_of_steps_searches_once_per_context_bucket_not_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What keeps a step's price cheap (its speed is `cost_decode_step_us` in `make bench`): as the
    contexts grow a token per step, the mode decision and the AIC split search are made once per
    context bucket (1/64 octave) and reused by every other step in it, which prices itself once."""
    dep = paper_decode()
    price = decode_model._price
    num_priced = 0

    def counted(*args: Any) -> tuple[float, int | None]:
        nonlocal num_priced
        num_priced += 1
        return price(*args)

    monkeypatch.setattr(decode_model, "_price", counted)
    steps = [[k + i for k in range(4000, 4048)] for i in range(200)]

    def bucket(context_tokens: float) -> int:
        return round(math.log2(1 + context_tokens) * 64)

    decode_model._mode_hint.cache_clear()
    decode_model._best_aic.cache_clear()
    for kv in steps:
        decode_step_cost(dep, len(kv), kv)
    buckets = {bucket(sum(kv)) for kv in steps}
    shapes = set()  # the microbatches' shapes, contexts bucketed
    for kv in steps:
        (n0, k0), (n1, k1) = split_microbatches(kv)
        shapes.add((n0, n1, bucket(k0), bucket(k1)))
    assert len(buckets) < len(steps) // 10  # the premise: a few buckets span the run
    hints = decode_model._mode_hint.cache_info()
    assert (hints.misses, hints.hits) == (len(buckets), len(steps) - len(buckets))
    assert num_priced == len(steps) + 2 * len(buckets)  # each decision prices both modes once
    # one search per microbatch shape the steps ran, and at most one per mode decision's uniform probe
    assert 0 < decode_model._best_aic.cache_info().misses <= len(shapes) + len(buckets)
