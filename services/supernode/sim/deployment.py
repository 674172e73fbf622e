"""What `supernode sim` runs: a deployment given as flags or a YAML file (default: the paper's).

YAML keys (all optional; the paper's value when absent):

    prefill: {instances: 6, npus: 16, tokens_per_npu: 16384, ep_size: 32}
    decode:  {instances: 1, npus: 160, emulated_dies: 0, max_batch_per_die: 48, mtp_depth: 1,
              mtp_accept: 0.7, tpot_slo_ms: 0}     # emulated_dies 0 = every die of the instance
    pool:    {capacity_gb: 24576}        # nominal EMS DRAM over every node
    router:  {policy: paper}
    nodes: 48
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from supernode.core import topology
from supernode.hw import cost as hw_cost
from supernode.inproc import ClusterShape
from supernode.runtime.config import Settings
from supernode.runtime.deployments import decode_deployment

# ASSUMPTION: the paper does not give the DRAM per node; 4 sockets x 128 GB = 512 GB per node.
DEFAULT_POOL_GB = 48 * 512


@dataclass(frozen=True, slots=True)
class SimDeployment:
    num_prefill: int = 6  # prefill instances ([v3] §5: 6 x 16 NPUs)
    prefill_npus: int = 16
    tokens_per_npu: int = 16384  # prefill batch budget per NPU
    prefill_ep_size: int = 32
    num_decode: int = 1  # decode instances ([v3] §5: one EP320 instance on 160 NPUs)
    decode_npus: int = 160
    decode_dies: int = 0  # dies emulated per decode instance (0 = all; a live service runs a 2-die slice)
    max_batch_per_die: int = 48  # paper: 96 per NPU
    mtp_depth: int = 1
    mtp_accept: float = 0.7
    tpot_slo_ms: float = 0.0  # 0 = no SLO bound on the batch
    pool_gb: float = DEFAULT_POOL_GB  # nominal EMS DRAM (GB)
    policy: str = "paper"  # router prefill policy
    num_nodes: int = 48

    @property
    def num_prefill_npus(self) -> int:
        return self.num_prefill * self.prefill_npus

    @property
    def num_decode_npus(self) -> float:
        """Decode NPUs emulated (a slice of each instance when `decode_dies` is set)."""
        return self.num_decode * (self.decode_dies / 2 if self.decode_dies else self.decode_npus)

    def shape(self) -> ClusterShape:
        return ClusterShape(
            self.num_prefill, self.num_decode, self.prefill_npus, self.decode_dies or self.decode_npus * 2,
            int(self.pool_gb * 1e9), self.num_nodes,
        )  # fmt: skip

    def settings(self, base: Settings | None = None) -> Settings:
        """Settings for the cluster's engines: the deployment's figures over `base`."""
        data = (base or Settings()).model_dump()
        data["runtime"]["time_scale"] = 1.0
        data["prefill"].update(tokens_per_npu=self.tokens_per_npu, ep_size=self.prefill_ep_size,
                               max_queue=1 << 20)  # fmt: skip
        data["decode"].update(
            ep_size=self.decode_npus * topology.DIES_PER_NPU, max_batch_per_die=self.max_batch_per_die,
            mtp_depth=self.mtp_depth, mtp_accept=self.mtp_accept, tpot_slo_ms=self.tpot_slo_ms,
            max_queue=1 << 20,
        )  # fmt: skip
        data["router"].update(
            policy=self.policy, max_inflight=1 << 30, reserve_wait_s=1e9, max_tokens_limit=1 << 20,
            max_context_tokens=1 << 22,
        )  # fmt: skip
        settings = Settings.model_validate(data)
        if self.num_nodes < 1:
            raise ValueError(f"nodes: must be >= 1, got {self.num_nodes}")
        per_npu = topology.DIES_PER_NPU
        decode_dies = self.decode_dies or per_npu * self.decode_npus
        wanted = per_npu * self.num_prefill_npus + self.num_decode * decode_dies
        if wanted > self.num_nodes * topology.DIES_PER_NODE:
            raise ValueError(
                f"nodes: {self.num_nodes} nodes hold {self.num_nodes * topology.DIES_PER_NODE} dies, the "
                f"instances want {wanted}; give at least {-(-wanted // topology.DIES_PER_NODE)} nodes"
            )
        if hw_cost.kv_capacity_tokens_per_die(decode_deployment(settings.decode)) < 1:
            raise ValueError(
                f"decode.npus: at {self.decode_npus} NPUs the model's weights leave no HBM for KV; use more"
            )
        return settings


_YAML_KEYS: dict[str, dict[str, str]] = {
    "prefill": {"instances": "num_prefill", "npus": "prefill_npus", "tokens_per_npu": "tokens_per_npu",
                "ep_size": "prefill_ep_size"},
    "decode": {"instances": "num_decode", "npus": "decode_npus", "emulated_dies": "decode_dies",
               "max_batch_per_die": "max_batch_per_die",
               "mtp_depth": "mtp_depth", "mtp_accept": "mtp_accept", "tpot_slo_ms": "tpot_slo_ms"},
    "pool": {"capacity_gb": "pool_gb"},
    "router": {"policy": "policy"},
}  # fmt: skip


def load_deployment(path: Path) -> SimDeployment:
    """Reads a deployment file; an unknown key is a ValueError naming it."""
    import yaml

    doc: Any = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a mapping")
    changes: dict[str, Any] = {}
    for section, value in doc.items():
        if section == "nodes":
            changes["num_nodes"] = int(value)
            continue
        keys = _YAML_KEYS.get(section)
        if keys is None or not isinstance(value, dict):
            raise ValueError(
                f"{path}: unknown section '{section}' (one of: {', '.join([*_YAML_KEYS, 'nodes'])})"
            )
        for key, item in value.items():
            if key not in keys:
                raise ValueError(f"{path}: {section}.{key}: unknown (one of: {', '.join(keys)})")
            changes[keys[key]] = item
    return replace(SimDeployment(), **changes)
