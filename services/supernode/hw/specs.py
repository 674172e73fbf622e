"""Hardware, model and deployment specifications (frozen dataclasses; defaults are the paper's).

Hardware is described per *die* (the compute unit: one 910C package is 2 dies; a GPU is 1 die).
Numbers come from `calibration.py`, which names their sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from supernode.hw import calibration as cal
from supernode.hw.mtp import expected_tokens_per_step

Precision = Literal["int8", "bf16"]
AttentionParallel = Literal["hybrid", "dp"]
CommRow = tuple[int, float, float]  # (EP degree, latency us, bandwidth B/s) at 128 tokens per rank


def _fields_hash(obj: Any) -> int:
    return hash(tuple(getattr(obj, f.name) for f in fields(obj) if f.compare))


class _CachedHash:
    """Frozen specs are lru_cache keys on every priced step: hash them once, not per lookup."""

    __slots__ = ()
    cached_hash: int  # a dataclass field of each subclass (compare=False, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cached_hash", _fields_hash(self))


@dataclass(frozen=True, slots=True)
class Hardware(_CachedHash):
    """One die: cores, peaks, HBM, links and its measured dispatch/combine table."""

    name: str
    num_cube_cores: int  # AIC (Ascend) or SMs (NVIDIA)
    num_vector_cores: int  # AIV (Ascend); 0 where vector units live inside the SMs
    int8_ops_per_s: float  # peak INT8 (FP8 on NVIDIA) dense ops per second
    bf16_flops_per_s: float
    hbm_bytes: float
    hbm_bytes_per_s: float
    scaleup_bytes_per_s: float  # measured point-to-point write bandwidth inside the supernode / NVLink
    scaleup_read_bytes_per_s: float
    scaleup_latency_us: float
    rdma_bytes_per_s: float  # per die, one way
    rdma_latency_us: float
    pool_read_bytes_per_s: float  # DRAM pool (EMS) -> die
    pool_latency_us: float
    attn_compute_eff: float  # share of BF16 peak a compute-bound MLA kernel reaches
    gemm_compute_eff: float  # share of peak a large GEMM reaches
    mem_eff: float  # share of HBM bandwidth a memory-bound kernel reaches
    dispatch_table: tuple[CommRow, ...]
    combine_table: tuple[CommRow, ...]
    dispatch_msg_bytes: int
    combine_msg_bytes: int
    ep_link_bytes_per_s: float  # per-byte rate of the decode (low-latency) dispatch/combine kernels
    dies_per_device: int  # 2 for a 910C package, 1 for a GPU
    splits_cores: bool  # True: two streams own disjoint cores (AIC/AIV); False: SMs are time-shared
    prefill_comm_cores: int  # cube cores (SMs) taken from compute by the prefill communication kernels
    devices_per_node: int  # scale-up domain of the normal (prefill) kernels; 0 = the whole EP group
    normal_rdma_bytes_per_s: float  # prefill normal kernels, RDMA bottleneck rate (0 = no RDMA hop)
    cached_hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:  # defined in the class body, so the dataclass keeps it
        return self.cached_hash

    @property
    def num_cores(self) -> int:
        return self.num_cube_cores + self.num_vector_cores


@dataclass(frozen=True, slots=True)
class Tuning:
    """The FITTED constants of `calibration.py` (hardware-independent; `supernode calibrate` refits them)."""

    attn_serving_eff: float = cal.ATTN_SERVING_EFF.value
    prefill_link_eff: float = cal.PREFILL_LINK_EFF.value
    default_eplb_hot_factor: float = cal.DEFAULT_EPLB_HOT_FACTOR.value


SHIPPED = Tuning()


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Transformer shape ([DSV3-cfg], reference §9)."""

    name: str = "deepseek-r1"
    num_layers: int = 61
    num_dense_layers: int = 3
    hidden: int = 7168
    dense_intermediate: int = 18432
    expert_intermediate: int = 2048
    num_routed_experts: int = 256
    num_shared_experts: int = 1
    top_k: int = 8
    num_heads: int = 128
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_dim: int = 128
    qk_rope_dim: int = 64
    v_head_dim: int = 128
    vocab: int = 129280
    num_mtp_layers: int = 1

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers

    @property
    def kv_bytes_per_token_layer(self) -> int:
        """BF16 MLA latent (compressed KV + RoPE key) of one token in one layer, bytes."""
        return (self.kv_lora_rank + self.qk_rope_dim) * 2


def _ascend_910c() -> Hardware:
    return Hardware(
        name="ascend-910c",
        num_cube_cores=cal.ASCEND_AIC_CORES.value,
        num_vector_cores=cal.ASCEND_AIV_CORES.value,
        int8_ops_per_s=cal.ASCEND_INT8_OPS_PER_S.value,
        bf16_flops_per_s=cal.ASCEND_BF16_FLOPS_PER_S.value,
        hbm_bytes=cal.ASCEND_HBM_BYTES.value,
        hbm_bytes_per_s=cal.ASCEND_HBM_BYTES_PER_S.value,
        scaleup_bytes_per_s=cal.UB_WRITE_NPU_INTER_BYTES_PER_S.value,
        scaleup_read_bytes_per_s=cal.UB_READ_NPU_INTER_BYTES_PER_S.value,
        scaleup_latency_us=cal.UB_WRITE_NPU_INTER_LATENCY_US.value,
        rdma_bytes_per_s=cal.ASCEND_RDMA_BYTES_PER_S.value,
        rdma_latency_us=cal.RDMA_LATENCY_US.value,
        pool_read_bytes_per_s=cal.UB_READ_CPU_INTER_BYTES_PER_S.value,
        pool_latency_us=cal.UB_READ_CPU_INTER_LATENCY_US.value,
        attn_compute_eff=cal.ASCEND_ATTN_COMPUTE_EFF.value,
        gemm_compute_eff=cal.GEMM_COMPUTE_EFF.value,
        mem_eff=cal.ASCEND_MEM_EFF.value,
        dispatch_table=cal.CM384_DISPATCH.value,
        combine_table=cal.CM384_COMBINE.value,
        dispatch_msg_bytes=cal.DISPATCH_MSG_BYTES.value,
        combine_msg_bytes=cal.COMBINE_MSG_BYTES.value,
        ep_link_bytes_per_s=cal.UB_WRITE_NPU_INTER_BYTES_PER_S.value,
        dies_per_device=2,
        splits_cores=True,
        prefill_comm_cores=0,  # SDMA engines move prefill's bulk traffic ([v3] §4.3.2)
        devices_per_node=0,
        normal_rdma_bytes_per_s=0.0,
    )


def _nvidia(name: str, nvlink_bytes_per_s: float) -> Hardware:
    """H800/H100 SXM: same SM array, HBM and CX7 NICs; NVLink differs. EP traffic is DeepEP over RDMA."""
    return Hardware(
        name=name,
        num_cube_cores=cal.H100_SMS.value,
        num_vector_cores=0,
        int8_ops_per_s=cal.H100_FP8_OPS_PER_S.value,
        bf16_flops_per_s=cal.H100_BF16_FLOPS_PER_S.value,
        hbm_bytes=cal.H100_HBM_BYTES.value,
        hbm_bytes_per_s=cal.H100_HBM_BYTES_PER_S.value,
        scaleup_bytes_per_s=min(nvlink_bytes_per_s, cal.DEEPEP_NORMAL_NVLINK_BYTES_PER_S.value),
        scaleup_read_bytes_per_s=min(nvlink_bytes_per_s, cal.DEEPEP_NORMAL_NVLINK_BYTES_PER_S.value),
        scaleup_latency_us=cal.RDMA_LATENCY_US.value,
        rdma_bytes_per_s=cal.CX7_RDMA_BYTES_PER_S.value,
        rdma_latency_us=cal.RDMA_LATENCY_US.value,
        pool_read_bytes_per_s=cal.CX7_RDMA_BYTES_PER_S.value,
        pool_latency_us=cal.RDMA_LATENCY_US.value,
        attn_compute_eff=cal.H800_ATTN_COMPUTE_EFF.value,
        gemm_compute_eff=cal.GEMM_COMPUTE_EFF.value,
        mem_eff=cal.H800_MEM_EFF.value,
        dispatch_table=cal.H800_DISPATCH.value,
        combine_table=cal.H800_COMBINE.value,
        dispatch_msg_bytes=cal.H800_DISPATCH_MSG_BYTES.value,
        combine_msg_bytes=cal.COMBINE_MSG_BYTES.value,
        ep_link_bytes_per_s=cal.CX7_RDMA_BYTES_PER_S.value,
        dies_per_device=1,
        splits_cores=False,
        prefill_comm_cores=cal.DEEPSEEK_PREFILL_COMM_SMS.value,
        devices_per_node=cal.NVIDIA_GPUS_PER_NODE.value,
        normal_rdma_bytes_per_s=cal.DEEPEP_NORMAL_RDMA_BYTES_PER_S.value,
    )


ASCEND_910C = _ascend_910c()
H800 = _nvidia("h800", cal.H800_NVLINK_BYTES_PER_S.value)
H100 = _nvidia("h100", cal.H100_NVLINK_BYTES_PER_S.value)
HARDWARE: dict[str, Hardware] = {hw.name: hw for hw in (ASCEND_910C, H800, H100)}
DEEPSEEK_R1 = ModelConfig()
MODELS: dict[str, ModelConfig] = {DEEPSEEK_R1.name: DEEPSEEK_R1}

# DeepSeek-R1 MLA latent per token: (kv_lora_rank 512 + rope 64) x 61 layers x 2 B (reference 3.3, DSV3-cfg).
KV_BYTES_PER_TOKEN = DEEPSEEK_R1.kv_bytes_per_token_layer * DEEPSEEK_R1.num_layers


@dataclass(frozen=True, slots=True)
class PrefillDeployment(_CachedHash):
    """One prefill instance ([v3] §5.1: 16 NPUs, EP32, 10 experts per rank, hybrid SP-TP-SP MLA)."""

    num_npus: int = 16
    dies_per_npu: int = 2
    ep_size: int = 32  # dies in the EP group
    experts_per_die: int = 10  # expert slots per die, shared-expert copies included
    num_redundant_experts: int = 32  # extra routed-expert replicas for EPLB
    attention: AttentionParallel = "hybrid"  # SP-TP-SP ([v3] §4.3.1) or plain DP
    attn_precision: Precision = "int8"  # MLA projections
    moe_precision: Precision = "int8"  # experts and dense FFN
    microbatches: int = 2  # compute / communication overlap ([v3] §4.3.2)
    expert_imbalance: float = 1.0  # busiest routed-expert slot load over the mean (1.0 = perfect EPLB)
    hardware: Hardware = ASCEND_910C
    model: ModelConfig = DEEPSEEK_R1
    tuning: Tuning = SHIPPED
    cached_hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:  # defined in the class body, so the dataclass keeps it
        return self.cached_hash

    @property
    def num_dies(self) -> int:
        return self.num_npus * self.dies_per_npu


@dataclass(frozen=True, slots=True)
class DecodeDeployment(_CachedHash):
    """One decode instance ([v3] §5.1: 160 NPUs, EP320, one expert per die, DP attention)."""

    num_npus: int = 160
    dies_per_npu: int = 2
    ep_size: int = 320  # dies in the EP group
    experts_per_die: int = 1  # expert slots per die, shared-expert copies included
    num_redundant_experts: int = 32  # 320 slots = 32 shared copies + 256 routed + 32 redundant
    attn_precision: Precision = "int8"
    moe_precision: Precision = "int8"
    microbatch: bool | None = None  # two microbatches on two streams ([v3] §4.2.3); None = chosen per step
    aic_split: int | None = None  # AIC cores of stream 0 (attention), AIV twice that; None = chosen per step
    max_batch_per_die: int = 48  # sequences the dispatch/combine buffers are sized for ([v3] §4.2.1)
    mtp_depth: int = 1  # speculative tokens per step (0 = off); [v3] §4.2.4
    mtp_accept: float = 0.7  # acceptance of each speculative token ([v3] §5.2)
    expert_imbalance: float = cal.DECODE_IMBALANCE.value
    hide_graph_launch: bool = True  # [v3] §4.2.4 aggregated metadata + in-NPU sampling
    hardware: Hardware = ASCEND_910C
    model: ModelConfig = DEEPSEEK_R1
    tuning: Tuning = SHIPPED
    cached_hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:  # defined in the class body, so the dataclass keeps it
        return self.cached_hash

    @property
    def num_dies(self) -> int:
        return self.num_npus * self.dies_per_npu

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens emitted per sequence per step (drafts accepted one after another)."""
        return expected_tokens_per_step(self.mtp_depth, self.mtp_accept)


def paper_prefill() -> PrefillDeployment:
    """The paper's prefill instance with perfect expert balance."""
    return PrefillDeployment()


def paper_decode() -> DecodeDeployment:
    """The paper's decode instance."""
    return DecodeDeployment()


def fit_experts_per_die(
    ep_size: int, num_redundant: int, shared_local: bool, model: ModelConfig = DEEPSEEK_R1
) -> int:
    """Fewest expert slots per die that hold every routed expert, the redundant replicas and the shared
    expert: one copy per die when `shared_local` (prefill), else at least one dedicated copy (decode)."""
    shared = ep_size if shared_local else 1
    needed = model.num_routed_experts + num_redundant + shared
    return max(1, -(-needed // ep_size))
