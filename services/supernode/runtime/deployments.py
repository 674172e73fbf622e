"""Settings -> the cost model's deployment records (the only place that translates between them)."""

from __future__ import annotations

import dataclasses

from supernode.hw import specs
from supernode.runtime.config import DecodeSettings, PrefillSettings


def prefill_deployment(cfg: PrefillSettings) -> specs.PrefillDeployment:
    """The prefill instance one prefill service emulates."""
    base = specs.paper_prefill()
    per_die = specs.fit_experts_per_die(cfg.ep_size, base.num_redundant_experts, shared_local=True)
    # Every die holds one shared-expert copy; slots left over after the routed experts hold replicas.
    redundant = per_die * cfg.ep_size - base.model.num_routed_experts - cfg.ep_size
    return dataclasses.replace(
        base,
        num_npus=cfg.num_npus,
        ep_size=cfg.ep_size,
        experts_per_die=per_die,
        num_redundant_experts=redundant,
        attn_precision=cfg.precision,
        moe_precision=cfg.precision,
        expert_imbalance=cfg.expert_imbalance,
    )


def decode_deployment(cfg: DecodeSettings) -> specs.DecodeDeployment:
    """The whole decode instance (EP group) whose `num_dies` ranks one decode service emulates."""
    base = specs.paper_decode()
    return dataclasses.replace(
        base,
        num_npus=max(1, cfg.ep_size // base.dies_per_npu),
        ep_size=cfg.ep_size,
        experts_per_die=specs.fit_experts_per_die(
            cfg.ep_size, base.num_redundant_experts, shared_local=False
        ),
        attn_precision=cfg.precision,
        moe_precision=cfg.precision,
        mtp_depth=cfg.mtp_depth,
        mtp_accept=cfg.mtp_accept,
        expert_imbalance=cfg.expert_imbalance or base.expert_imbalance,
    )
