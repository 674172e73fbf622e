from __future__ import annotations

from supernode.hw import cost, specs
from supernode.runtime.config import DecodeSettings, PrefillSettings
from supernode.runtime.deployments import decode_deployment, prefill_deployment


def test_default_settings_are_the_papers_deployments():
    assert prefill_deployment(PrefillSettings()) == specs.paper_prefill()
    assert decode_deployment(DecodeSettings()) == specs.paper_decode()


def test_other_ep_degrees_fit_every_expert_and_price():
    for ep in (16, 64, 128, 256):
        dep = decode_deployment(DecodeSettings(ep_size=ep))
        assert dep.experts_per_die * ep >= 256 + 32 + 1
        assert cost.decode_step_cost(dep, 8, [4096] * 8).total_us > 0
    pre = prefill_deployment(PrefillSettings(ep_size=64, num_npus=32))
    assert pre.experts_per_die * 64 >= 256 + 32 + 64
    assert cost.prefill_batch_cost(pre, [4096], [0]).total_us > 0


def test_settings_reach_the_deployment():
    dep = decode_deployment(DecodeSettings(mtp_depth=0, precision="bf16"))
    assert dep.mtp_depth == 0 and dep.attn_precision == "bf16" and dep.moe_precision == "bf16"
    assert cost.tpot_ms(dep, 48, 4096) > cost.tpot_ms(specs.paper_decode(), 48, 4096)
