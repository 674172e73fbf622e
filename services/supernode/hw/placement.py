"""Expert placement over an EP group and the busiest die's MoE load.

An EP group of `ep` dies has `ep x experts_per_die` expert slots: 256 routed experts, their redundant
replicas, and the rest are shared-expert copies. If every die holds a shared copy (prefill: 1 shared +
8 routed + 1 redundant per rank) the shared expert runs locally on the die's own tokens. Otherwise shared
copies sit on dedicated dies (decode: 32 of 320) and each token is also dispatched to one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from supernode.hw import calibration as cal
from supernode.hw.specs import ModelConfig


@dataclass(frozen=True, slots=True)
class Placement:
    """Slots of an EP group."""

    ep: int
    experts_per_die: int
    num_routed_slots: int  # routed experts + redundant replicas
    num_shared_slots: int

    @property
    def is_shared_local(self) -> bool:
        return self.num_shared_slots >= self.ep


@dataclass(frozen=True, slots=True)
class MoeLoad:
    """What the busiest die does in one MoE layer for `tokens_per_rank` tokens on every rank."""

    expert_tokens: float  # token-expert pairs computed
    sent: float  # token copies this die dispatches (and gets back in combine)
    received: float  # token copies this die receives for its experts


def placement(m: ModelConfig, ep: int, experts_per_die: int, num_redundant: int) -> Placement:
    """Validate and describe the slots; raises ValueError when the numbers do not add up."""
    if ep < 1 or experts_per_die < 1 or num_redundant < 0:
        raise ValueError("ep, experts_per_die must be >= 1 and num_redundant_experts >= 0")
    routed = m.num_routed_experts + num_redundant
    shared = ep * experts_per_die - routed
    if shared < 1:
        raise ValueError(
            f"ep x experts_per_die = {ep * experts_per_die} slots leave no room for the shared expert "
            f"next to {routed} routed (incl. redundant) experts"
        )
    if shared > ep and experts_per_die > 1:
        raise ValueError(f"{shared} shared-expert slots exceed one per die (ep={ep})")
    return Placement(ep, experts_per_die, routed, shared)


def moe_load(m: ModelConfig, p: Placement, tokens_per_rank: float, imbalance: float) -> MoeLoad:
    """Busiest die's load when every rank holds `tokens_per_rank` tokens; `imbalance` = hottest routed
    slot over the mean (1.0 = perfect EPLB)."""
    group_tokens = tokens_per_rank * p.ep
    routed_per_slot = group_tokens * m.top_k / p.num_routed_slots * imbalance
    remote = (p.ep - 1) / p.ep
    if p.is_shared_local:
        routed_on_die = routed_per_slot * (p.experts_per_die - 1)
        return MoeLoad(
            routed_on_die + tokens_per_rank, tokens_per_rank * m.top_k * remote, routed_on_die * remote
        )
    shared_per_slot = group_tokens / p.num_shared_slots
    busiest = max(
        routed_per_slot * p.experts_per_die,
        shared_per_slot + routed_per_slot * (p.experts_per_die - 1),
    )
    dests = m.top_k + (1 if cal.SHARED_EXPERT_IS_DISPATCHED.value else 0)
    return MoeLoad(busiest, tokens_per_rank * dests * remote, busiest * remote)
