"""Every number the cost model uses, with its source in `reference/cloudmatrix-infer.md`.

A constant is a `Sourced(value, source)`. `source` names the paper section or table (tags as in the
reference: [v2], [v3], [DSV3-cfg], [DERIVED], [DeepEP]) or starts with "ASSUMPTION:" and says why.
End-to-end results (reference section 4) and the per-layer decode latencies (section 3.7) are never
inputs, except for at most four constants (three today) labelled "FITTED:", for which the paper gives
no operator-level figure.
Each names the training rows it was fitted on; `supernode calibrate` (hw/fit.py) reruns the fit on Ascend
rows only and a test fails when the shipped values drift from it. A unit test walks this module and fails
on a constant without a source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Sourced(Generic[_T]):
    """A calibration value and where it comes from."""

    value: _T
    source: str


# --- Ascend 910C, per die ---------------------------------------------------------------------------
ASCEND_AIC_CORES = Sourced(24, "[v3] §3.3.1: 24 AI Cube cores per die")
ASCEND_AIV_CORES = Sourced(48, "[v3] §3.3.1: 48 AI Vector cores per die")
ASCEND_INT8_OPS_PER_S = Sourced(752e12, "[DERIVED] §1.1: 1,504 TOPS/NPU normalizer of [v3] T2/T3, / 2 dies")
ASCEND_BF16_FLOPS_PER_S = Sourced(
    376e12, "ASSUMPTION: secondary spec 752 TFLOPS BF16 per package (reference §1.1), / 2 dies"
)
ASCEND_HBM_BYTES = Sourced(64e9, "[v2] §3.3.1 Memory: 64 GB per die")
ASCEND_HBM_BYTES_PER_S = Sourced(1.6e12, "[v2] §3.3.1, Fig 3: 1,600 GB/s per die")
ASCEND_UB_LINK_BYTES_PER_S = Sourced(196e9, "[v2] §3.3.1: 7 x 224 Gbps = 196 GB/s per die, one way")
UB_READ_NPU_INTER_BYTES_PER_S = Sourced(164e9, "[v2] Table 1: NPU-NPU read, inter-node")
UB_WRITE_NPU_INTER_BYTES_PER_S = Sourced(135e9, "[v2] Table 1: NPU-NPU write, inter-node")
UB_READ_NPU_INTER_LATENCY_US = Sourced(1.9, "[v2] Table 1: NPU-NPU read latency, inter-node, 512 B")
UB_WRITE_NPU_INTER_LATENCY_US = Sourced(2.1, "[v2] Table 1: NPU-NPU write latency, inter-node, 512 B")
UB_READ_CPU_INTER_BYTES_PER_S = Sourced(147e9, "[v2] Table 1: NPU-CPU read (EMS DRAM -> NPU), inter-node")
UB_READ_CPU_INTER_LATENCY_US = Sourced(1.7, "[v2] Table 1: NPU-CPU read latency, inter-node")
UB_CPU_PORT_BYTES_PER_S = Sourced(160e9, "[v2] §3.3.2, Figs 2/4: UB ~160 GB/s per Kunpeng socket, one way")
ASCEND_RDMA_BYTES_PER_S = Sourced(25e9, "[v2] §3.3.1, Fig 3: RoCE 200 Gbps per die, one way")
RDMA_LATENCY_US = Sourced(5.0, "ASSUMPTION: RoCE one-way latency is not in the paper; a few us is typical")

# --- Measured operator efficiencies -----------------------------------------------------------------
ASCEND_ATTN_COMPUTE_EFF = Sourced(0.654, "[v3] Table 7: CANN MLA compute-bound, BF16, one die")
ASCEND_MEM_EFF = Sourced(0.841, "[v3] Table 8: CANN MLA memory-bound, share of HBM bandwidth")
GEMM_COMPUTE_EFF = Sourced(0.797, "[v3] Table 9: mean compute utilization of the six INT8 GEMM rows")
BF16_GEMM_SAME_EFF = Sourced(
    True, "ASSUMPTION: BF16 GEMMs reach the INT8 GEMM utilization of Table 9 (no BF16 GEMM figure)"
)
H800_ATTN_COMPUTE_EFF = Sourced(0.667, "[v3] Table 7: FlashMLA on H800, compute-bound")
H800_MEM_EFF = Sourced(0.896, "[v3] Table 8: FlashMLA on H800, memory-bound")

# --- Dispatch / Combine (Table 6, batch 128 tokens per rank) ------------------------------------------
TABLE6_TOKENS_PER_RANK = Sourced(128, "[v3] Table 6 setup: batch 128 tokens per rank")
DISPATCH_MSG_BYTES = Sourced(7680, "[v3] §4.2.1: 7 KB INT8 token + INT32 scale padded to 512 B = 7.5 KB")
COMBINE_MSG_BYTES = Sourced(14336, "[v3] §4.2.1: 14 KB BF16 token")
CM384_DISPATCH = Sourced(
    ((8, 116.0, 71e9), (16, 131.0, 63e9), (32, 133.0, 62e9), (64, 141.0, 58e9), (128, 152.0, 54e9),
     (256, 152.0, 54e9)),
    "[v3] Table 6: CM384 dispatch (EP, latency us, bandwidth B/s)",
)  # fmt: skip
CM384_COMBINE = Sourced(
    ((8, 118.0, 131e9), (16, 132.0, 117e9), (32, 146.0, 105e9), (64, 150.0, 103e9), (128, 150.0, 103e9),
     (256, 149.0, 103e9)),
    "[v3] Table 6: CM384 combine (EP, latency us, bandwidth B/s)",
)  # fmt: skip
H800_DISPATCH = Sourced(
    ((8, 163.0, 46e9), (16, 173.0, 43e9), (32, 182.0, 41e9), (64, 186.0, 40e9), (128, 192.0, 39e9),
     (256, 194.0, 39e9)),
    "[v3] Table 6 / [DeepEP]: H800 DeepEP low-latency dispatch (EP, latency us, bandwidth B/s)",
)  # fmt: skip
H800_COMBINE = Sourced(
    ((8, 318.0, 46e9), (16, 329.0, 44e9), (32, 350.0, 41e9), (64, 353.0, 41e9), (128, 369.0, 39e9),
     (256, 360.0, 40e9)),
    "[v3] Table 6 / [DeepEP]: H800 DeepEP low-latency combine (EP, latency us, bandwidth B/s)",
)  # fmt: skip
H800_DISPATCH_MSG_BYTES = Sourced(7392, "[DeepEP] FP8 dispatch: 7,168 B + 56 FP32 block scales")
EP_BEYOND_TABLE = Sourced(
    256, "ASSUMPTION: above EP256 keep the EP256 row; Table 6 is flat from EP128 to EP256"
)
SHARED_EXPERT_IS_DISPATCHED = Sourced(
    True,
    "ASSUMPTION: with dedicated shared-expert dies a token has top_k + 1 destinations (UNCONFIRMED §3.1)",
)

# --- NVIDIA presets (public spec sheets; the reference only gives 80 GB, NVLink, 400 Gbps IB) ---------
H100_SMS = Sourced(132, "ASSUMPTION: public NVIDIA H100/H800 SXM spec sheet, 132 SMs")
H100_FP8_OPS_PER_S = Sourced(1979e12, "ASSUMPTION: public H100/H800 SXM spec sheet, FP8 dense")
H100_BF16_FLOPS_PER_S = Sourced(989e12, "ASSUMPTION: public H100/H800 SXM spec sheet, BF16 dense")
H100_HBM_BYTES = Sourced(80e9, "[v3] §3.5.1 / reference §2.2: H800 80 GB HBM (H100 SXM spec sheet: same)")
H100_HBM_BYTES_PER_S = Sourced(3.35e12, "ASSUMPTION: public H100/H800 SXM spec sheet, 3.35 TB/s HBM3")
H800_NVLINK_BYTES_PER_S = Sourced(200e9, "ASSUMPTION: public H800 spec sheet, NVLink 400 GB/s bidir.")
H100_NVLINK_BYTES_PER_S = Sourced(450e9, "ASSUMPTION: public H100 SXM spec sheet, NVLink 900 GB/s bidir.")
CX7_RDMA_BYTES_PER_S = Sourced(50e9, "[v3] Table 6 setup: CX7 400 Gb/s per GPU")

# --- Runtime overheads and memory ----------------------------------------------------------------
GRAPH_LAUNCH_US = Sourced(700.0, "[v3] §4.2.4: 0.6-0.8 ms startup per graph dispatch (midpoint)")
LM_HEAD_PRECISION = Sourced(
    "attention",
    "ASSUMPTION: the vocabulary projection is a large GEMM and runs W8A8 like the attention GEMMs; "
    "[v3] §3.6 keeps only 'certain normalization layers or critical gating mechanisms' in high precision",
)
SAMPLING_PASSES = Sourced(
    13,
    "ASSUMPTION: in-NPU sampling ([v3] §4.2.4: sort, cumulative sum, filter) over FP32 logits: a radix sort "
    "of 4 byte-digit passes (read + write each), softmax (2), cumsum (2) and filter (1) = 13 passes",
)
LOGIT_BYTES = Sourced(4, "ASSUMPTION: logits are FP32 for sampling")
WORKSPACE_BYTES_PER_DIE = Sourced(
    4e9, "ASSUMPTION: activations, CANN runtime and graph workspace; not in the paper"
)
COMM_BUFFER_FORMULA = Sourced(
    "rank_num x max_tokens x msg", "[v3] §4.2.1: static pre-allocation, 645 MB at EP320 and 96 tokens"
)

# --- Load balance ------------------------------------------------------------------------------------
DECODE_IMBALANCE = Sourced(
    1.0, "ASSUMPTION: decode runs EPLB with 32 redundant experts; the paper reports no residual imbalance"
)
TABLE6_DESTINATIONS = Sourced(8, "[v3] Table 6 setup: top-8 routing, 128 tokens x 8 destinations per rank")

# --- NVIDIA communication kernels (DeepEP, paper ref [56]) ---------------------------------------------
NVIDIA_GPUS_PER_NODE = Sourced(8, "[v3] §3.5.1: H800 nodes of 8 GPUs (4 nodes = 32 GPUs for DP32+EP32)")
DEEPEP_NORMAL_NVLINK_BYTES_PER_S = Sourced(
    153e9, "[DeepEP] README, normal kernels on H800: intranode EP8 dispatch 153 GB/s NVLink (combine 158)"
)
DEEPEP_NORMAL_RDMA_BYTES_PER_S = Sourced(
    57e9, "[DeepEP] README, normal kernels on H800: internode EP32 dispatch 58 / combine 57 GB/s RDMA"
)
DEEPSEEK_PREFILL_COMM_SMS = Sourced(
    24, "[v3] §4.3.2 / reference §3.4: DeepSeek on H800 reserves 24 of 132 SMs for communication"
)
DEEPSEEK_DECODE_COMM_SMS = Sourced(
    0, "[v3] Fig 14a: DeepSeek's decode pipeline runs communication on 0 SMs (low-latency kernels)"
)

AIV_DRIVES_EP_WRITES = Sourced(
    True,
    "[v3] §4.2.1 (AIV-Direct: AIV cores copy each token to UBuffer, quantize and write it to the remote "
    "HBM) and ASSUMPTION that Table 6 ran on all 48 AIV cores of the die: a decode stream owning a share "
    "of the AIV cores moves dispatch/combine bytes at that share of the Table 6 per-byte rate ([v3] "
    "§5.4.1: per-microbatch Dispatch 'marginally increased' with fewer cores despite half the tokens)",
)
VECTOR_OPS_AT_MEM_EFF = Sourced(
    True,
    "ASSUMPTION: non-GEMM vector ops stream their bytes at the memory-bound efficiency of [v3] Table 8",
)

# --- Fitted: no operator-level figure exists; fitted by `supernode calibrate` on Ascend rows only -------
TRAINING_ROWS = Sourced(
    "prefill 6,688 and 5,655 tok/s/NPU ([v3] T2); decode TPOT 49.4 ms at 96/NPU ([v3] T3), 14.9 ms at "
    "8/NPU ([v3] T4); per MoE layer 874 us (no MTP) and 1,260 us (MTP) at 96/NPU, 4K ([v3] §5.4.2)",
    "[v3] Tables 2-4, §5.4.2, Fig 22b: the rows the FITTED constants below are fitted on",
)
ATTN_SERVING_EFF = Sourced(
    0.83,
    "FITTED: jointly on prefill 6,688 tok/s/NPU, decode TPOT 49.4 / 14.9 ms and 874 / 1,260 us per MoE "
    "layer: attention compute efficiency in serving relative to the microbenchmark of [v3] Table 7",
)
PREFILL_LINK_EFF = Sourced(
    0.557,
    "FITTED: jointly with ATTN_SERVING_EFF, mostly by prefill 6,688 tok/s/NPU ([v3] T2): share of the "
    "measured UB link rate the prefill bulk transfers (All-Gather, All-to-All, dispatch, combine) reach",
)
DEFAULT_EPLB_HOT_FACTOR = Sourced(
    1.39,
    "FITTED: on prefill 5,655 vs 6,688 tok/s/NPU ([v3] T2): busiest routed-expert slot load over the "
    "mean under the default expert placement, found so that the model's own ratio is 5,655 / 6,688",
)
