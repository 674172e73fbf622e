"""One prefill batch on an instance: the busiest die, each layer a dependency chain over two resources.

Hybrid SP-TP-SP MLA ([v3] §4.3.1): tokens are packed over the dies (SP) for the down-projections, an
All-Gather of the compressed latents gives every die all tokens for its share of heads (TP) for the
up-projections and FlashAttention, and an All-to-All returns each die its own tokens for O_proj (SP).
With `attention="dp"` whole sequences are placed on dies (longest first) and the collectives vanish.
MoE is EP over the instance. A layer is a chain per microbatch ([v3] §4.3.2, Fig 18b):

    down-proj -> All-Gather -> up-proj + attention -> All-to-All -> O_proj + gate -> dispatch -> experts
    -> combine

Compute stages run on the cores (AIC + AIV, or the SMs not reserved for communication), communication
stages on the fabric (SDMA / copy engines). With n microbatches each resource serves the stages in chain
order, microbatch after microbatch, and a stage starts when its predecessor is done and its resource is
free: a pipeline, not a free overlap of two buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from supernode.hw import calibration as cal
from supernode.hw import comm, ops
from supernode.hw.placement import moe_load, placement
from supernode.hw.prefill_shape import Shape, busiest_head_tokens, shape
from supernode.hw.result import Cost, PartTimes
from supernode.hw.roofline import Share, time_us
from supernode.hw.specs import PrefillDeployment

Step = tuple[bool, dict[str, float]]  # (is communication, busy us per part) of one microbatch


# Memoised pieces of a batch's chain: pure functions of the deployment and a few token counts, which
# repeat from batch to batch (an SP chunk is ceil(tokens / dies)). The cached steps are never mutated.
_CACHE = 8192


@lru_cache(maxsize=64)
def _share(dep: PrefillDeployment) -> Share:
    hw = dep.hardware
    return Share((hw.num_cube_cores - hw.prefill_comm_cores) / hw.num_cube_cores)


def _compute(dep: PrefillDeployment, works: list[ops.Work]) -> dict[str, float]:
    hw, share, tune = dep.hardware, _share(dep), dep.tuning
    out: dict[str, float] = {}
    for w in works:
        out[w.part] = out.get(w.part, 0.0) + time_us(hw, w, share, tune)
    return out


@lru_cache(maxsize=_CACHE)
def _down_step(dep: PrefillDeployment, own: float) -> Step:
    return (False, _compute(dep, [ops.mla_down_prefill(dep.model, own, dep.attn_precision)]))


@lru_cache(maxsize=_CACHE)
def _all_to_all_step(dep: PrefillDeployment, own: float, head_frac: float) -> Step:
    m = dep.model
    out_bytes = own * (1 - head_frac) * m.num_heads * m.v_head_dim * ops.BF16_BYTES
    return (
        True,
        {"attn_all_to_all": comm.all_to_all_us(dep.hardware, out_bytes, dep.tuning.prefill_link_eff)},
    )


def _attn_steps(dep: PrefillDeployment, s: Shape, k: float) -> list[Step]:
    """Attention chain of one microbatch holding a share `k` of the batch."""
    m, hw, prec, eff = dep.model, dep.hardware, dep.attn_precision, dep.tuning.prefill_link_eff
    own, tp_new, cached = s.tokens * k, s.tp_tokens * k, s.cached * k
    up = ops.mla_up_prefill(m, tp_new, cached, s.head_frac, prec)
    attn = ops.attention_prefill(m, s.pairs * k, tp_new + cached, s.head_frac)
    steps: list[Step] = [_down_step(dep, own)]
    if dep.attention == "hybrid" and dep.num_dies > 1:
        steps.append(
            (True, {"attn_all_gather": comm.all_gather_us(hw, tp_gather_bytes(dep, tp_new, cached), eff)})
        )
    steps.append((False, _compute(dep, [up, attn])))
    if dep.attention == "hybrid" and dep.num_dies > 1:
        steps.append(_all_to_all_step(dep, own, s.head_frac))
    return steps


def tp_gather_bytes(dep: PrefillDeployment, new_tokens: float, cached_tokens: float) -> float:
    """Bytes one die receives in a layer's All-Gather before the TP stage (hybrid SP-TP-SP).

    TP splits the heads, so every die needs every token's latent for its heads: the new tokens' Q and
    KV latents (from the down-projection on the die that holds them), and the cached prefix tokens' KV
    latents (each prefix lands from the pool on one die). A die already holds 1/num_dies of them."""
    m, n = dep.model, dep.num_dies
    q_kv = (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_dim) * ops.BF16_BYTES
    kv = (m.kv_lora_rank + m.qk_rope_dim) * ops.BF16_BYTES
    return (new_tokens * q_kv + cached_tokens * kv) * (n - 1) / n


@lru_cache(maxsize=_CACHE)
def _ffn_steps(dep: PrefillDeployment, own: float, dense: bool) -> tuple[Step, ...]:
    """The FFN side of a layer for a microbatch of `own` tokens per die."""
    m, hw, eff = dep.model, dep.hardware, dep.tuning.prefill_link_eff
    o_proj = [ops.o_proj_prefill(m, own, dep.attn_precision), ops.vector_attn(m, own)]
    if dense:
        ffn = [ops.dense_ffn(m, own, dep.moe_precision), ops.vector_dense(m, own, m.dense_intermediate)]
        return ((False, _compute(dep, o_proj + ffn)),)
    p = placement(m, dep.ep_size, dep.experts_per_die, dep.num_redundant_experts)
    load = moe_load(m, p, own, dep.expert_imbalance)
    copies = max(load.sent, load.received)
    experts = [
        ops.experts(m, load.expert_tokens, dep.experts_per_die, dep.moe_precision),
        ops.vector_moe(m, own, load.expert_tokens, load.sent, hw.dispatch_msg_bytes),
    ]
    return (
        (False, _compute(dep, [*o_proj, ops.gate(m, own)])),
        (True, {"dispatch": comm.bulk_ep_us(hw, dep.ep_size, own, copies, hw.dispatch_msg_bytes, eff)}),
        (False, _compute(dep, experts)),
        (True, {"combine": comm.bulk_ep_us(hw, dep.ep_size, own, copies, hw.combine_msg_bytes, eff)}),
    )


def _chain(layers: Sequence[list[Step]], num_mbs: int) -> float:
    """Makespan (us) of `num_mbs` microbatches running the chained steps of `layers` on two resources."""
    return _chain_marks(layers, num_mbs, (len(layers),))[0]


def _chain_marks(layers: Sequence[list[Step]], num_mbs: int, marks: Sequence[int]) -> list[float]:
    """The makespans (us) of the first `marks[i]` layers of `layers` (marks ascending), in one pass: the
    chain is a running state, so a longer chain's first layers end exactly as the shorter chain does."""
    ready = [0.0] * num_mbs
    free = [0.0, 0.0]  # when each resource (compute, communication) is next free
    totals: dict[int, list[tuple[bool, float]]] = {}  # id(steps) -> each step's time, summed once
    out: list[float] = []
    pending = iter(marks)
    mark = next(pending, None)
    for num_done, steps in enumerate(layers):
        while mark == num_done:
            out.append(max(ready))
            mark = next(pending, None)
        timed = totals.get(id(steps))
        if timed is None:
            timed = totals[id(steps)] = [(is_comm, sum(parts.values())) for is_comm, parts in steps]
        if num_mbs == 2:  # the usual case, unrolled (the same operations in the same order)
            r0, r1 = ready
            for is_comm, t in timed:
                at = free[is_comm]
                r0 = at = (r0 if r0 > at else at) + t
                r1 = at = (r1 if r1 > at else at) + t
                free[is_comm] = at
            ready[0], ready[1] = r0, r1
            continue
        for is_comm, t in timed:
            at = free[is_comm]
            for i, r in enumerate(ready):
                at = (r if r > at else at) + t  # starts when its predecessor and the resource are done
                ready[i] = at
            free[is_comm] = at
    while mark is not None:
        out.append(max(ready))
        mark = next(pending, None)
    return out


def _layer_steps(dep: PrefillDeployment, s: Shape, num_mbs: int) -> tuple[list[Step], list[Step]]:
    k = 1.0 / num_mbs
    attn = _attn_steps(dep, s, k)
    own = s.tokens * k
    return [*attn, *_ffn_steps(dep, own, True)], [*attn, *_ffn_steps(dep, own, False)]


def _num_mbs(dep: PrefillDeployment, s: Shape) -> int:
    return max(1, min(dep.microbatches, int(s.tokens)))


def _charge(acc: PartTimes, steps: list[Step], num_mbs: int, elapsed: float, count: float) -> None:
    busy: dict[str, float] = {}
    for _, parts in steps:
        for name, t in parts.items():
            busy[name] = busy.get(name, 0.0) + t * num_mbs
    acc.add_overlapped(busy, elapsed, count)


def prefill_batch_cost(
    dep: PrefillDeployment,
    new_tokens: Sequence[int],
    cached_tokens: Sequence[int],
    *,
    lm_head_tokens: Sequence[int] | None = None,
) -> Cost:
    """One prefill batch on the whole instance (us): sequence i computes new_tokens[i] tokens after
    cached_tokens[i] prefix tokens already in HBM (their attention still costs; loading them does not).
    `lm_head_tokens[i]` is how many of sequence i's last positions go through the vocabulary projection
    (default 1: the first output token; segment scoring asks for more). The busiest die sets the time:
    with SP the tokens are packed in equal chunks, so an uneven split makes a straggler. An empty batch
    costs 0."""
    if len(new_tokens) != len(cached_tokens):
        raise ValueError("new_tokens and cached_tokens must have the same length")
    heads = (1,) * len(new_tokens) if lm_head_tokens is None else tuple(lm_head_tokens)
    if len(heads) != len(new_tokens) or any(h < 0 or h > n for h, n in zip(heads, new_tokens, strict=True)):
        raise ValueError("lm_head_tokens must give, per sequence, 0..new_tokens[i] positions")
    cost = _batch_cost(dep, tuple(new_tokens), tuple(cached_tokens), heads)
    # The cached cost's parts are the cache's: the caller gets its own copy of them.
    return Cost(cost.total_us, dict(cost.breakdown_us), dict(cost.busy_us), cost.mode, cost.aic_split)


def forget_batch_costs() -> None:
    """Empties the cache of whole-batch costs (the chain pieces' caches stay), so the next call prices
    its batch again: what a benchmark of pricing itself measures."""
    _batch_cost.cache_clear()


@lru_cache(maxsize=_CACHE)
def _batch_cost(
    dep: PrefillDeployment,
    new_tokens: tuple[int, ...],
    cached_tokens: tuple[int, ...],
    heads: tuple[int, ...],
) -> Cost:
    """`prefill_batch_cost` of checked arguments. Batches of the same shape recur (prompts of the
    same lengths, prefixes cached in whole blocks): about two in three in the mixed workload."""
    if sum(new_tokens) == 0:
        return Cost(0.0, {}, {})
    s = shape(dep, new_tokens, cached_tokens)
    mbs = _num_mbs(dep, s)
    dense, moe = _layer_steps(dep, s, mbs)
    m = dep.model
    acc = PartTimes()
    probe = 3
    nd = m.num_dense_layers
    t_dense, t_probe, t_next = _chain_marks(
        [dense] * nd + [moe] * (probe + 1), mbs, (nd, nd + probe, nd + probe + 1)
    )
    period = t_next - t_probe
    t_moe = t_probe - t_dense + period * (m.num_moe_layers - probe)
    _charge(acc, dense, mbs, t_dense / m.num_dense_layers, m.num_dense_layers)
    _charge(acc, moe, mbs, t_moe / m.num_moe_layers, m.num_moe_layers)
    last = busiest_head_tokens(dep, new_tokens, heads)
    if last > 0:  # a batch of non-final chunks samples nothing
        lm_head_us, sampling_us = _head_us(dep, last)
        acc.add("lm_head", lm_head_us)
        acc.add("sampling", sampling_us)
    acc.add("launch", cal.GRAPH_LAUNCH_US.value)
    return acc.cost()


@lru_cache(maxsize=_CACHE)
def _head_us(dep: PrefillDeployment, tokens: float) -> tuple[float, float]:
    """(vocabulary projection, sampling) of `tokens` positions on the busiest die (us)."""
    m, hw, tune = dep.model, dep.hardware, dep.tuning
    return (
        time_us(hw, ops.lm_head(m, tokens, dep.attn_precision), tune=tune),
        time_us(hw, ops.sampling(m, tokens), tune=tune),
    )


def prefill_moe_layer_cost(
    dep: PrefillDeployment, new_tokens: Sequence[int], cached_tokens: Sequence[int]
) -> Cost:
    """One MoE layer of the batch in steady state (us), for reporting."""
    if sum(new_tokens) == 0:
        return Cost(0.0, {}, {})
    s = shape(dep, new_tokens, cached_tokens)
    mbs = _num_mbs(dep, s)
    _, moe = _layer_steps(dep, s, mbs)
    period = _chain([moe] * 4, mbs) - _chain([moe] * 3, mbs)
    acc = PartTimes()
    _charge(acc, moe, mbs, period, 1)
    return acc.cost()


def prefill_chain_us(dep: PrefillDeployment, steps: list[Step], num_mbs: int, num_layers: int) -> float:
    """Makespan of `num_layers` identical layers (exposed for tests of the pipeline)."""
    return _chain([steps] * num_layers, num_mbs)
