"""One decode step of the busiest die: 61 layers (+ MTP) in one of two modes, chosen per step.

`single`: the die runs each layer's attention then its MoE (or dense FFN) on all its cores, reading the
weights once. `microbatch` ([v3] §4.2.3): the batch is split in two; stream 0 runs the attention of one
microbatch while stream 1 runs the MoE of the other, so each layer is two overlapped pairs of stages
(`stages.py`), weights are read twice, and the step pays the pipeline's fill once. On Ascend the AIC/AIV
cores are split between the streams (AIV = 2 x AIC, as in the paper's 16/32 + 8/16); the split that
minimises the step is searched per step shape and cached, as the paper re-tunes it at runtime. The mode
that minimises the step wins unless the deployment or the caller forces one.

Attention is priced on the busiest rank (its sequences and context lengths); the MoE on the EP group's
mean tokens per rank, since every rank dispatches to every other one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from supernode.hw import calibration as cal
from supernode.hw import ops
from supernode.hw.placement import moe_load, placement
from supernode.hw.result import Cost, PartTimes, SerialPartTimes
from supernode.hw.roofline import time_us
from supernode.hw.specs import DecodeDeployment
from supernode.hw.stages import Stage, attn_stage, attn_total_us, dense_stage, moe_stage, pair_us

Mb = tuple[int, float]  # (sequences, total context tokens) of one microbatch on the busiest rank


def split_microbatches(kv_lens: Sequence[int]) -> tuple[Mb, Mb]:
    """Two microbatches of near-equal work: sequences sorted by context, dealt alternately."""
    ordered = sorted(kv_lens, reverse=True)
    a, b = ordered[0::2], ordered[1::2]
    return (len(a), float(sum(a))), (len(b), float(sum(b)))


def _shares(dep: DecodeDeployment, aic: int | None) -> tuple[float, float]:
    n = dep.hardware.num_cube_cores
    if aic is None or not dep.hardware.splits_cores:
        return 1.0, 1.0
    return aic / n, (n - aic) / n


def _busy(acc: PartTimes, stages: Sequence[Stage], elapsed: float, count: float) -> None:
    """Charges `count` regions that ran `stages` in `elapsed` us (as PartTimes.add_overlapped)."""
    if acc.is_serial:  # the stages ran one after another (elapsed is their sum): busy = exposed
        exposed = acc.exposed
        get = exposed.get
        for st in stages:
            for name, t in st.parts:
                exposed[name] = get(name, 0.0) + t * count
        return
    total = 0.0
    for st in stages:
        total += st.total_us
    scale = elapsed / total * count if total > 0 else 0.0
    busy, exposed = acc.busy, acc.exposed
    busy_get, exposed_get = busy.get, exposed.get
    for st in stages:
        for name, t in st.parts:
            busy[name] = busy_get(name, 0.0) + t * count
            exposed[name] = exposed_get(name, 0.0) + t * scale


def _layers_micro(
    dep: DecodeDeployment, mbs: tuple[Mb, Mb], moe_tokens: float, aic: int | None, acc: PartTimes | None
) -> float:
    """Microbatch mode: all layers plus the pipeline fill (us); charges parts into `acc` if given.

    The first (dense) layers have no communication to hide, so they run as one batch on the whole die
    where that is faster; the pipeline starts at the first MoE layer."""
    hw, m, q = dep.hardware, dep.model, 1 + dep.mtp_depth
    s0, s1 = _shares(dep, aic)
    a0 = attn_stage(dep, mbs[0][0], mbs[0][1], s0)
    a1 = attn_stage(dep, mbs[1][0], mbs[1][1], s0)
    f = dense_stage(dep, moe_tokens * q / 2, s1)
    period = pair_us(a1, f, hw) + pair_us(a0, f, hw)
    a = attn_stage(dep, mbs[0][0] + mbs[1][0], mbs[0][1] + mbs[1][1], 1.0)
    d = dense_stage(dep, moe_tokens * q, 1.0)
    dense_single = a.total_us + d.total_us < period
    total = (min(period, a.total_us + d.total_us)) * m.num_dense_layers
    if acc is not None:
        if dense_single:
            _busy(acc, (a, d), a.total_us + d.total_us, m.num_dense_layers)
        else:
            _busy(acc, (a0, a1, f, f), period, m.num_dense_layers)
    f = moe_stage(dep, moe_tokens * q / 2, s1)
    period = pair_us(a1, f, hw) + pair_us(a0, f, hw)
    total += period * m.num_moe_layers
    fill = a0.total_us + f.total_us - pair_us(a0, f, hw)  # the first and last stage run alone
    if acc is not None:
        _busy(acc, (a0, a1, f, f), period, m.num_moe_layers)
        acc.add("pipeline_fill", fill)
    return total + fill


def _layers_single(dep: DecodeDeployment, mb: Mb, moe_tokens: float, acc: PartTimes | None) -> float:
    """Single-batch mode: attention then FFN on the whole die, layer after layer (us)."""
    m, q = dep.model, 1 + dep.mtp_depth
    a = attn_stage(dep, mb[0], mb[1], 1.0)
    total = 0.0
    for stage_fn, count in ((dense_stage, m.num_dense_layers), (moe_stage, m.num_moe_layers)):
        f = stage_fn(dep, moe_tokens * q, 1.0)
        total += (a.total_us + f.total_us) * count
        if acc is not None:
            _busy(acc, (a, f), a.total_us + f.total_us, count)
    return total


def _kv_bucket(kv_sum: float) -> int:
    """Context in 1/64 octaves (about 1%): the split that is best for a bucket is best within it."""
    return round(math.log2(1.0 + kv_sum) * 64)


@lru_cache(maxsize=8192)
def _best_aic(dep: DecodeDeployment, n0: int, n1: int, kv0: int, kv1: int, moe_tokens: float) -> int:
    """AIC cores of stream 0 that minimise a microbatch step of this shape (context bucketed).

    More cores speed stream 0 and slow stream 1, so the layer time is V-shaped in the split: a ternary
    search over the integers, then the neighbours, finds its minimum in about ten evaluations."""
    mbs = ((n0, 2.0 ** (kv0 / 64) - 1.0), (n1, 2.0 ** (kv1 / 64) - 1.0))

    def cost(aic: int) -> float:
        return _layers_micro(dep, mbs, moe_tokens, aic, None)

    lo, hi = 1, dep.hardware.num_cube_cores - 1
    while hi - lo > 2:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if cost(m1) <= cost(m2):
            hi = m2
        else:
            lo = m1
    return min(range(lo, hi + 1), key=cost)


def _aic_for(dep: DecodeDeployment, mbs: tuple[Mb, Mb], moe_tokens: float) -> int | None:
    if not dep.hardware.splits_cores:
        return None
    if dep.aic_split is not None:
        if not 0 < dep.aic_split < dep.hardware.num_cube_cores:
            raise ValueError(
                f"aic_split must be in 1..{dep.hardware.num_cube_cores - 1}, got {dep.aic_split}"
            )
        return dep.aic_split
    (n0, k0), (n1, k1) = mbs
    return _best_aic(dep, n0, n1, _kv_bucket(k0), _kv_bucket(k1), moe_tokens)


@lru_cache(maxsize=1024)
def _head_parts(dep: DecodeDeployment, batch: int) -> tuple[tuple[str, float], ...]:
    """LM head and sampling for the main model and each MTP draft, and the MTP projections (us)."""
    m, hw, d = dep.model, dep.hardware, dep.mtp_depth
    tokens = batch * (1 + d)
    parts = [
        ("lm_head", (1 + d) * time_us(hw, ops.lm_head(m, tokens, dep.attn_precision), tune=dep.tuning)),
        ("sampling", (1 + d) * time_us(hw, ops.sampling(m, tokens), tune=dep.tuning)),
    ]
    if d > 0:
        parts.append(
            ("mtp_layer", d * time_us(hw, ops.mtp_proj(m, tokens, dep.attn_precision), tune=dep.tuning))
        )
    return tuple(parts)


@lru_cache(maxsize=256)
def _one_token(dep: DecodeDeployment) -> DecodeDeployment:
    return replace(dep, mtp_depth=0)


def _mtp_layer_us(
    dep: DecodeDeployment, mbs: tuple[Mb, Mb], moe_tokens: float, aic: int | None, micro: bool
) -> float:
    """The MTP module's transformer block (an MoE layer, [DSV3-cfg]) in the step's mode, on one token per
    sequence of the busiest rank (split into microbatches `mbs`): it drafts from the last accepted
    position."""
    one = _one_token(dep)
    if not micro:
        a_us = attn_total_us(one, mbs[0][0] + mbs[1][0], mbs[0][1] + mbs[1][1], 1.0)
        return a_us + moe_stage(one, moe_tokens, 1.0).total_us
    s0, s1 = _shares(one, aic)
    a0, a1 = attn_stage(one, *mbs[0], s0), attn_stage(one, *mbs[1], s0)
    f = moe_stage(one, moe_tokens / 2, s1)
    return pair_us(a1, f, one.hardware) + pair_us(a0, f, one.hardware)


def _price(
    dep: DecodeDeployment, busiest: Sequence[int], moe_tokens: float, micro: bool, acc: PartTimes | None
) -> tuple[float, int | None]:
    """Step time (us) and the AIC split used; charges the parts into `acc` when given."""
    if micro:
        mbs = split_microbatches(busiest)
        aic = _aic_for(dep, mbs, moe_tokens)
        total = _layers_micro(dep, mbs, moe_tokens, aic, acc)
    else:
        # One batch needs only the total context: the lengths are ints, so their sum is exact and is
        # what the two halves of `split_microbatches` add up to, without sorting them.
        mbs = ((len(busiest), float(sum(busiest))), (0, 0.0))
        aic = None
        total = _layers_single(dep, mbs[0], moe_tokens, acc)
    if dep.mtp_depth > 0:  # the MTP module is one more layer, run once per draft
        mtp = _mtp_layer_us(dep, mbs, moe_tokens, aic, micro)
        total += mtp * dep.mtp_depth
        if acc is not None:
            acc.add("mtp_layer", mtp, dep.mtp_depth)
    launch = 0.0 if dep.hide_graph_launch else launch_us(dep)
    for name, t in (*_head_parts(dep, len(busiest)), ("launch", launch)):
        total += t
        if acc is not None:
            acc.add(name, t)
    return total, aic


def _cost(dep: DecodeDeployment, busiest: Sequence[int], moe_tokens: float, micro: bool) -> Cost:
    acc = PartTimes() if micro else SerialPartTimes()
    _, aic = _price(dep, busiest, moe_tokens, micro, acc)
    return acc.cost("microbatch" if micro else "single", aic)


MODE_MARGIN = 0.025  # relative gap between the modes above which a bucketed decision cannot be wrong


@lru_cache(maxsize=8192)
def _mode_hint(dep: DecodeDeployment, num_seqs: int, kv_bucket: int, moe_tokens: float) -> tuple[bool, float]:
    """(microbatch wins, relative gap) for a step of this shape, context bucketed in 1/64 octaves."""
    kv = (2.0 ** (kv_bucket / 64) - 1.0) / num_seqs
    busiest = [round(kv)] * num_seqs
    micro, _ = _price(dep, busiest, moe_tokens, True, None)
    single, _ = _price(dep, busiest, moe_tokens, False, None)
    return micro <= single, abs(micro - single) / min(micro, single)


def decode_step_ranks_cost(
    dep: DecodeDeployment, busiest: Sequence[int], moe_tokens: float, microbatch: bool | None = None
) -> Cost:
    """A step whose busiest rank holds sequences with context lengths `busiest` while the EP group's
    ranks hold `moe_tokens` sequences each on average. `microbatch` (else `dep.microbatch`) forces a
    mode; None picks the faster. Splitting needs two sequences on the busiest rank."""
    if not busiest:
        return Cost(0.0, {}, {})
    forced = dep.microbatch if microbatch is None else microbatch
    can_split = len(busiest) >= 2
    if forced is not None or not can_split:
        return _cost(dep, busiest, moe_tokens, bool(forced) and can_split)
    hint, margin = _mode_hint(dep, len(busiest), _kv_bucket(sum(busiest)), moe_tokens)
    if margin > MODE_MARGIN:  # far from the crossover: the cached choice is the right one
        return _cost(dep, busiest, moe_tokens, hint)
    micro, _ = _price(dep, busiest, moe_tokens, True, None)
    single, _ = _price(dep, busiest, moe_tokens, False, None)
    return _cost(dep, busiest, moe_tokens, micro <= single)


def decode_step_cost(
    dep: DecodeDeployment, batch_per_die: int, kv_lens: Sequence[int], *, microbatch: bool | None = None
) -> Cost:
    """One decode step (us) when every rank holds `batch_per_die` sequences like these `kv_lens`.

    With MTP depth d the step verifies 1 + d tokens per sequence and runs the MTP layer d times. An empty
    batch costs 0: an idle instance does not step.
    """
    if len(kv_lens) != batch_per_die:
        raise ValueError(f"len(kv_lens)={len(kv_lens)} != batch_per_die={batch_per_die}")
    return decode_step_ranks_cost(dep, kv_lens, float(batch_per_die), microbatch)


def launch_us(dep: DecodeDeployment) -> float:
    """Graph dispatch time per step when it is not hidden: one graph per verified token ([v3] §4.2.4)."""
    return cal.GRAPH_LAUNCH_US.value * (1 + dep.mtp_depth)


def moe_layer_us(
    dep: DecodeDeployment, batch_per_die: int, kv_len: int, microbatch: bool | None = None
) -> Cost:
    """One MoE layer (us) at uniform KV length in the mode the step would use, for reporting."""
    if batch_per_die == 0:
        return Cost(0.0, {}, {})
    kv = [kv_len] * batch_per_die
    mode = decode_step_cost(dep, batch_per_die, kv, microbatch=microbatch)
    acc = PartTimes()
    q, tokens = 1 + dep.mtp_depth, float(batch_per_die)
    if mode.mode == "microbatch":
        mbs = split_microbatches(kv)
        s0, s1 = _shares(dep, mode.aic_split)
        a0, a1 = attn_stage(dep, *mbs[0], s0), attn_stage(dep, *mbs[1], s0)
        f = moe_stage(dep, tokens * q / 2, s1)
        hw = dep.hardware
        _busy(acc, (a0, a1, f, f), pair_us(a1, f, hw) + pair_us(a0, f, hw), 1)
    else:
        a, f = attn_stage(dep, batch_per_die, float(sum(kv)), 1.0), moe_stage(dep, tokens * q, 1.0)
        _busy(acc, (a, f), a.total_us + f.total_us, 1)
    return acc.cost(mode.mode, mode.aic_split)


def stream_stages(dep: DecodeDeployment, batch_per_die: int, kv_len: int, aic: int) -> tuple[Stage, Stage]:
    """(attention, MoE) stage of one microbatch of an even split, for reporting the per-stream latency."""
    s0, s1 = _shares(dep, aic)
    half = batch_per_die // 2
    q = 1 + dep.mtp_depth
    return attn_stage(dep, half, float(half * kv_len), s0), moe_stage(dep, batch_per_die * q / 2, s1)


def step_works(dep: DecodeDeployment, batch_per_die: int, kv_len: int) -> list[ops.Work]:
    """Work items of one MoE layer, one dense FFN and the head for a step, on the whole die (for checks)."""
    m, q = dep.model, 1 + dep.mtp_depth
    tokens = batch_per_die * q
    load = moe_load(m, placement(m, dep.ep_size, dep.experts_per_die, dep.num_redundant_experts), tokens, 1.0)
    return [
        ops.mla_prolog_decode(m, tokens, dep.attn_precision),
        ops.attention_decode(m, batch_per_die, float(batch_per_die * kv_len), q),
        ops.o_proj_decode(m, tokens, dep.attn_precision),
        ops.vector_attn(m, tokens),
        ops.gate(m, tokens),
        ops.experts(m, load.expert_tokens, dep.experts_per_die, dep.moe_precision),
        ops.vector_moe(m, tokens, load.expert_tokens, load.sent, dep.hardware.dispatch_msg_bytes),
        ops.dense_ffn(m, tokens, dep.moe_precision),
        ops.lm_head(m, tokens, dep.attn_precision),
        ops.sampling(m, tokens),
    ]
