"""The priced result: total time and named parts, plus the per-part busy time before overlap."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PARTS = (
    "mla_prolog",
    "attn_all_gather",
    "attention",
    "attn_all_to_all",
    "o_proj",
    "gate",
    "dispatch",
    "experts",
    "combine",
    "dense_ffn",
    "vector_ops",
    "pipeline_fill",
    "mtp_layer",
    "lm_head",
    "sampling",
    "launch",
)

_ORDER = {n: i for i, n in enumerate(PARTS)}


@dataclass(frozen=True, slots=True)
class Cost:
    """A priced batch or step (microseconds).

    `breakdown_us` holds the named parts of the critical path: they are non-negative and sum to
    `total_us`. Where two streams overlap, a layer's time is shared among its parts in proportion to
    their busy time. `busy_us` is each part's own running time on its stream, before overlap. A decode
    step also says how it ran: `mode` ("microbatch": two microbatches on two streams, or "single") and
    `aic_split` (AIC cores of the attention stream; None where the streams time-share the cores or do not
    overlap).
    """

    total_us: float
    breakdown_us: dict[str, float] = field(default_factory=dict)
    busy_us: dict[str, float] = field(default_factory=dict)
    mode: str = ""
    aic_split: int | None = None


class PartTimes:
    """Accumulates exposed and busy time per named part."""

    is_serial = False  # see SerialPartTimes

    def __init__(self) -> None:
        self.exposed: dict[str, float] = {}
        self.busy: dict[str, float] = {}

    def add_overlapped(self, busy: Mapping[str, float], elapsed_us: float, count: float = 1.0) -> None:
        """Charge `count` repetitions of a region that ran parts `busy` (us) in `elapsed_us`."""
        total_busy = sum(busy.values())
        scale = elapsed_us / total_busy if total_busy > 0 else 0.0
        for name, t in busy.items():
            self.busy[name] = self.busy.get(name, 0.0) + t * count
            self.exposed[name] = self.exposed.get(name, 0.0) + t * scale * count

    def add(self, name: str, t_us: float, count: float = 1.0) -> None:
        """Charge `count` repetitions of a part that ran alone for `t_us`."""
        self.busy[name] = self.busy.get(name, 0.0) + t_us * count
        self.exposed[name] = self.exposed.get(name, 0.0) + t_us * count

    def cost(self, mode: str = "", aic_split: int | None = None) -> Cost:
        exposed = _in_order(self.exposed)
        busy_in = self.busy
        busy = {n: busy_in[n] for n in exposed}
        return Cost(sum(exposed.values()), exposed, busy, mode, aic_split)


class SerialPartTimes(PartTimes):
    """PartTimes of a step whose parts never overlap (decode's single-batch mode): each part's busy
    time is its exposed time, so only that is summed (the same sums, half the work) and the cost
    carries it as both."""

    is_serial = True

    def add_overlapped(self, busy: Mapping[str, float], elapsed_us: float, count: float = 1.0) -> None:
        raise TypeError("the parts of a serial step do not overlap")

    def add(self, name: str, t_us: float, count: float = 1.0) -> None:
        self.exposed[name] = self.exposed.get(name, 0.0) + t_us * count

    def cost(self, mode: str = "", aic_split: int | None = None) -> Cost:
        exposed = _in_order(self.exposed)
        return Cost(sum(exposed.values()), exposed, dict(exposed), mode, aic_split)


def _in_order(given: dict[str, float]) -> dict[str, float]:
    """`given` in PARTS order, then any other name as it came."""
    names = [n for n in PARTS if n in given]
    if len(names) != len(given):
        names += [n for n in given if n not in _ORDER]
    return {n: given[n] for n in names}


def merge(into: dict[str, float], parts: Mapping[str, float], scale: float = 1.0) -> dict[str, float]:
    """Adds `parts` x scale into `into` and returns it."""
    for name, t in parts.items():
        into[name] = into.get(name, 0.0) + t * scale
    return into
