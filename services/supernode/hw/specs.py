"""Hardware, model and deployment specifications (placeholder: the cost-model issue fills this in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrefillDeployment:
    num_npus: int = 16
    dies_per_npu: int = 2


@dataclass(frozen=True, slots=True)
class DecodeDeployment:
    num_npus: int = 160
    dies_per_npu: int = 2


def paper_prefill() -> PrefillDeployment:
    return PrefillDeployment()


def paper_decode() -> DecodeDeployment:
    return DecodeDeployment()


# DeepSeek-R1 MLA latent per token: (kv_lora_rank 512 + rope 64) x 61 layers x 2 B (reference 3.3, DSV3-cfg).
KV_BYTES_PER_TOKEN = (512 + 64) * 61 * 2
