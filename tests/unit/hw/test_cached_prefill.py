"""Cached-prefix prefill: what the TP stage gathers, how the pool load is priced, and that the live
engine's load and the fidelity model price the same thing."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.fidelity import ideal_prefill, shared_prefix_load_s
from supernode.hw import calibration as cal
from supernode.hw import comm
from supernode.hw.cost import prefill_batch_cost
from supernode.hw.prefill import tp_gather_bytes
from supernode.hw.specs import ASCEND_910C, KV_BYTES_PER_TOKEN, paper_prefill
from supernode.prefill.engine import pool_cpu, prefix_source


def test_tp_stage_gathers_the_cached_prefix_latents_too() -> None:
    dep = paper_prefill()
    m, n = dep.model, dep.num_dies
    kv_latent = (m.kv_lora_rank + m.qk_rope_dim) * 2  # BF16 bytes per token per layer
    assert tp_gather_bytes(dep, 0, 1000) == pytest.approx(1000 * kv_latent * (n - 1) / n)
    new, cached = [512] * 64, [3584] * 64
    warm = prefill_batch_cost(dep, new, cached).busy_us["attn_all_gather"]
    cold = prefill_batch_cost(dep, new, [0] * 64).busy_us["attn_all_gather"]
    eff, per_layer = dep.tuning.prefill_link_eff, m.num_layers
    extra = (
        comm.all_gather_us(dep.hardware, tp_gather_bytes(dep, 0, sum(cached)), eff)
        - dep.hardware.scaleup_latency_us
    )
    assert warm - cold == pytest.approx(extra * per_layer, rel=1e-6)
    # DP attention keeps whole sequences on a die: nothing to gather, cached or not.
    dp = dataclasses.replace(dep, attention="dp")
    assert "attn_all_gather" not in prefill_batch_cost(dp, new, cached).breakdown_us


def test_cached_prefix_still_costs_more_the_longer_it_is() -> None:
    dep = paper_prefill()
    times = [prefill_batch_cost(dep, [512] * 64, [c] * 64).total_us for c in (0, 1024, 2048, 3584)]
    assert times == sorted(times) and times[-1] > 1.2 * times[0]


def test_pool_loads_end_at_their_busiest_port() -> None:
    hw = ASCEND_910C
    die, src = 2e9, 1e9
    t = comm.cache_loads_us(hw, die, src, 1e6)
    assert t == pytest.approx(hw.pool_latency_us + die / hw.pool_read_bytes_per_s * 1e6)
    t_src = comm.cache_loads_us(hw, 1e6, 4e9, 1e6)
    assert t_src == pytest.approx(hw.pool_latency_us + 4e9 / cal.UB_CPU_PORT_BYTES_PER_S.value * 1e6)
    assert comm.cache_loads_us(hw, 0, 0, 0) == 0.0


def test_requests_sharing_a_prefix_read_it_from_the_sockets_holding_its_blocks() -> None:
    keys = [f"{i * 2654435761 % 2**32:08x}ffff" for i in range(28)]
    holders = {pool_cpu(k) for k in keys}
    picked = [prefix_source(keys, f"req-{i}") for i in range(512)]
    assert set(picked) <= holders  # a block's own socket, never elsewhere
    assert len(set(picked)) >= 0.9 * len(holders)  # spread over them, not funnelled through the first
    busiest = max(picked.count(c) for c in set(picked))
    assert busiest < 3 * 512 / len(holders)  # each socket carries about its share
    assert prefix_source(keys, "req-7") == prefix_source(keys, "req-7")  # deterministic
    assert {prefix_source(keys, f"req-{i}", 12) for i in range(64)} <= set(range(12)), "a smaller pool"


def test_fidelity_model_loads_the_shared_prefix_before_its_batches() -> None:
    dep = paper_prefill()
    shape = [(512, 3584)] * 128
    load = shared_prefix_load_s(dep, 128, 3584, 128)
    per_die = 4 * 3584 * KV_BYTES_PER_TOKEN  # 128 prompts over 32 dies
    assert load == pytest.approx(
        comm.cache_loads_us(dep.hardware, per_die, 128 * 128 * KV_BYTES_PER_TOKEN, 128 * KV_BYTES_PER_TOKEN)
        / 1e6
    )
    total, ttft = ideal_prefill(dep, shape, 16384 * 16, load)
    total0, ttft0 = ideal_prefill(dep, shape, 16384 * 16)
    assert total == pytest.approx(total0 + load) and ttft == pytest.approx(ttft0 + load)
    assert shared_prefix_load_s(dep, 128, 0, 128) == 0.0


def test_a_batch_of_a_shape_priced_before_costs_the_same_and_is_the_callers_own() -> None:
    from supernode.hw import prefill as hw_prefill

    dep = paper_prefill()
    hw_prefill.forget_batch_costs()
    first = prefill_batch_cost(dep, [900, 40], [1024, 0], lm_head_tokens=[1, 1])
    first.breakdown_us.clear()  # the caller's copy: the next caller's cost is whole
    again = prefill_batch_cost(dep, (900, 40), (1024, 0))  # the default head positions: one each
    assert hw_prefill._batch_cost.cache_info().hits == 1
    assert again.total_us == first.total_us
    assert sum(again.breakdown_us.values()) == pytest.approx(again.total_us)
    assert again == prefill_batch_cost(dep, [900, 40], [1024, 0])
    assert again.breakdown_us is not first.breakdown_us
    hw_prefill.forget_batch_costs()  # what the cost benchmark does before each priced call
    assert prefill_batch_cost(dep, [900, 40], [1024, 0]) == again
    assert hw_prefill._batch_cost.cache_info().hits == 0, "priced again, not looked up"
    with pytest.raises(ValueError, match="lm_head_tokens"):
        prefill_batch_cost(dep, [900, 40], [1024, 0], lm_head_tokens=[1, 41])
    with pytest.raises(ValueError, match="same length"):
        prefill_batch_cost(dep, [900], [1024, 0])
