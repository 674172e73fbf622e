"""What `supernode model` predicts for a measured run point (the load reports' "predicted" column)."""

from __future__ import annotations

from collections.abc import Mapping

from supernode.hw import cost as hw_cost
from supernode.loadgen.bench import WorkloadShape
from supernode.runtime.config import get_settings
from supernode.runtime.deployments import decode_deployment, prefill_deployment


def predict(shape: WorkloadShape) -> Mapping[str, float]:
    """Model figures for the shape the run actually had, under the results' names.

    Decode: TPOT and tokens/s per NPU at the measured mean batch per NPU and the mean context
    (prompt + half the output). Prefill: the instance's capacity in tokens/s per NPU for batches of
    the mean prompt filling the token budget, at the measured cache-hit rate.
    """
    settings = get_settings()
    out: dict[str, float] = {}
    dec = decode_deployment(settings.decode)
    batch_per_die = max(1, round(shape.mean_decode_batch_per_npu / dec.dies_per_npu))
    kv_len = max(1, int(shape.mean_input_tokens + shape.mean_output_tokens / 2))
    out["mean_tpot_ms"] = hw_cost.tpot_ms(dec, batch_per_die, kv_len)
    steady = hw_cost.decode_tokens_per_s_per_npu(dec, batch_per_die, kv_len)
    out["decode_steady_tokens_per_s_per_npu"] = steady
    pre = prefill_deployment(settings.prefill)
    prompt = max(1, int(shape.mean_input_tokens))
    hit = min(0.99, max(0.0, shape.cache_hit_rate))
    work = hw_cost.PrefillWorkload(prompt, settings.prefill.tokens_per_npu, hit)
    out["prefill_capacity_tokens_per_s_per_npu"] = hw_cost.prefill_tokens_per_s_per_npu(pre, work)
    return out
