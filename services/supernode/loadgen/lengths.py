"""Token-length distributions for synthetic prompts and outputs. Pure.

Spec strings: `1024` or `fixed:1024`; `uniform:512:2048` (inclusive); `lognormal:1024:0.6` (median, sigma
of the underlying normal). Samples are clamped to [min_len, max_len].
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = ("fixed", "uniform", "lognormal")


@dataclass(frozen=True, slots=True)
class LengthDist:
    kind: str  # one of KINDS
    a: float  # fixed: the length; uniform: low; lognormal: median
    b: float = 0.0  # uniform: high; lognormal: sigma
    min_len: int = 1
    max_len: int = 131072

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.randint(int(self.a), int(self.b))
        else:
            value = rng.lognormvariate(math.log(self.a), self.b)
        return max(self.min_len, min(self.max_len, round(value)))

    def mean(self) -> float:
        """Mean before clamping, in tokens."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a * math.exp(self.b**2 / 2)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


def parse_length(spec: str, min_len: int = 1) -> LengthDist:
    """Parse a spec string; raises ValueError naming the rule that was broken."""
    parts = spec.strip().split(":")
    try:
        numbers = [float(p) for p in parts[1:]] if not parts[0][:1].isdigit() else [float(parts[0])]
    except ValueError:
        raise ValueError(f"length '{spec}': numbers expected after the kind") from None
    kind = "fixed" if parts[0][:1].isdigit() else parts[0]
    if kind not in KINDS:
        raise ValueError(f"length '{spec}': kind must be one of {', '.join(KINDS)}")
    if kind == "fixed" and len(numbers) == 1 and numbers[0] >= min_len:
        return LengthDist("fixed", numbers[0], min_len=min_len)
    if kind == "uniform" and len(numbers) == 2 and min_len <= numbers[0] <= numbers[1]:
        return LengthDist("uniform", numbers[0], numbers[1], min_len=min_len)
    if kind == "lognormal" and len(numbers) == 2 and numbers[0] >= min_len and numbers[1] >= 0:
        return LengthDist("lognormal", numbers[0], numbers[1], min_len=min_len)
    raise ValueError(
        f"length '{spec}': expected fixed:N, uniform:LOW:HIGH (LOW<=HIGH) or lognormal:MEDIAN:SIGMA, "
        f"lengths >= {min_len}"
    )
