"""`supernode calibrate`: refit the FITTED constants of `calibration.py` from their training rows.

Deterministic and dependency-free: a few rounds of coordinate-wise golden-section search on the two
efficiencies, minimising the summed squared relative error of the Ascend training rows (prefill with
perfect EPLB; decode TPOT at 96 and 8 per NPU; the per-layer latencies with and without MTP), then a
bisection on the default-EPLB hot factor so that the model's own default / perfect prefill ratio is the
paper's 5,655 / 6,688. NVIDIA rows are never used.
"""

from __future__ import annotations

from dataclasses import fields, replace

from supernode.hw.paper import decode_rows, prefill_rows
from supernode.hw.specs import SHIPPED, Tuning

BOUNDS = {"attn_serving_eff": (0.3, 1.0), "prefill_link_eff": (0.2, 1.0)}
ROUNDS = 3
GOLDEN_STEPS = 18
RATIO = 5655 / 6688
GOLD = 0.6180339887498949


def loss(tune: Tuning) -> float:
    """Summed squared relative error of the rows the two efficiencies are fitted on."""
    rows = [prefill_rows(tune)[0], *[r for r in decode_rows(tune) if "throughput" not in r.name]]
    return sum((r.model / r.paper - 1.0) ** 2 for r in rows)


def _golden(tune: Tuning, name: str) -> Tuning:
    lo, hi = BOUNDS[name]
    a, b = hi - GOLD * (hi - lo), lo + GOLD * (hi - lo)
    fa, fb = loss(replace(tune, **{name: a})), loss(replace(tune, **{name: b}))
    for _ in range(GOLDEN_STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - GOLD * (hi - lo)
            fa = loss(replace(tune, **{name: a}))
        else:
            lo, a, fa = a, b, fb
            b = lo + GOLD * (hi - lo)
            fb = loss(replace(tune, **{name: b}))
    return replace(tune, **{name: round((lo + hi) / 2, 3)})


def _eplb(tune: Tuning) -> Tuning:
    lo, hi = 1.0, 3.0
    for _ in range(30):
        mid = (lo + hi) / 2
        perfect, default = (r.model for r in prefill_rows(replace(tune, default_eplb_hot_factor=mid)))
        lo, hi = (mid, hi) if default / perfect > RATIO else (lo, mid)
    return replace(tune, default_eplb_hot_factor=round((lo + hi) / 2, 3))


def fit(start: Tuning = SHIPPED) -> Tuning:
    """The fitted constants, starting the search from `start` (the result does not depend on it much)."""
    tune = replace(start, **{n: (lo + hi) / 2 for n, (lo, hi) in BOUNDS.items()})
    for _ in range(ROUNDS):
        for name in BOUNDS:
            tune = _golden(tune, name)
    return _eplb(tune)


def compare(fitted: Tuning, shipped: Tuning = SHIPPED) -> list[tuple[str, float, float]]:
    """(name, fitted, shipped) for each FITTED constant."""
    return [(f.name, getattr(fitted, f.name), getattr(shipped, f.name)) for f in fields(Tuning)]
