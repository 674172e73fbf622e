"""Faults a simulation injects at emulated instants (`supernode sim --fault`, repeatable):

    prefill-<i>:kill@<t>      instance i's process dies at emulated second t: calls in flight fail at
                              once, as a killed process's connections do, and nothing answers again
    prefill-<i>:stop@<t>      it freezes (SIGSTOP): calls in flight and new ones never answer and its
                              load probes fail; the router finds out from those and its calls' bounds
    ...:kill@<t>+<d>          it comes back d emulated seconds later: a killed one as a fresh process
    ...:stop@<t>+<d>          on the same dies, holding nothing; a frozen one carries on (SIGCONT)
    decode-<i>:kill@<t>       the same for a decode instance (its requests move to another one,
    decode-<i>:stop@<t>       which needs --tokens: a counting-only run keeps no tokens to resume from)
    node-<n>:down@<t>+<d>     every UB/RDMA/VPC link of node n down for d emulated seconds
    node-<n>:<f>@<t>+<d>      ... left at f (0 < f < 1) of its capacity

These are what `make chaos` does to the live stack's processes and its fabric service, here on the
whole deployment: the router's retries, migrations and fault-aware routing are the engines' own.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from supernode.inproc import InprocCluster

_SPEC = re.compile(
    r"(?P<role>prefill|decode|node)-(?P<index>\d+):(?P<action>[a-z]+|\d*\.?\d+)"
    r"@(?P<at>\d*\.?\d+)(?:\+(?P<dur>\d*\.?\d+))?"
)
RULE = (
    "a fault is prefill-<i>:kill@<t>, prefill-<i>:stop@<t>, decode-<i>:kill@<t>, decode-<i>:stop@<t> "
    "(each with an optional +<d>: back after d), node-<n>:down@<t>+<d> or node-<n>:<factor>@<t>+<d> "
    "(t, d in emulated seconds, 0 < factor < 1)"
)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    role: str  # "prefill", "decode" or "node"
    index: int  # instance or node number
    action: str  # "kill", "stop" or "degrade" (a node: factor 0 is down)
    at_s: float  # emulated seconds after the simulation starts
    factor: float = 0.0  # a node's capacity kept
    duration_s: float = 0.0  # a node fault's window; an instance's time down (0: for good)

    @property
    def target(self) -> str:
        return f"{self.role}-{self.index}"

    def __str__(self) -> str:
        """The spec as written (it parses back to this)."""
        if self.role != "node":
            back = f"+{_num(self.duration_s)}" if self.duration_s > 0 else ""
            return f"{self.target}:{self.action}@{_num(self.at_s)}{back}"
        what = "down" if self.factor == 0 else _num(self.factor)
        return f"{self.target}:{what}@{_num(self.at_s)}+{_num(self.duration_s)}"


def _num(x: float) -> str:
    """`x` in plain decimals (no exponent, which the spec does not read), to the microsecond."""
    return format(x, "f").rstrip("0").rstrip(".") or "0"


def parse_fault(text: str) -> FaultSpec:
    """One `--fault` value; ValueError naming the rule it breaks."""
    m = _SPEC.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r}: {RULE}")
    role, index, action, at_s = m["role"], int(m["index"]), m["action"], float(m["at"])
    duration = m["dur"]
    if role == "node":
        if duration is None or float(duration) <= 0:
            raise ValueError(f"{text!r}: a node fault needs a window, +<d> with d > 0 emulated s")
        if action == "down":
            factor = 0.0
        else:
            try:
                factor = float(action)
            except ValueError:
                raise ValueError(f"{text!r}: a node is 'down' or kept at a factor; {RULE}") from None
            if not 0 < factor < 1:
                raise ValueError(f"{text!r}: the capacity kept must be in (0, 1); 'down' is 0")
        return FaultSpec(role, index, "degrade", at_s, factor, float(duration))
    if action not in ("kill", "stop"):
        raise ValueError(f"{text!r}: an instance is killed ('kill') or frozen ('stop')")
    if duration is not None and float(duration) <= 0:
        raise ValueError(f"{text!r}: an instance comes back after d > 0 emulated s (or, without +<d>, never)")
    return FaultSpec(role, index, action, at_s, duration_s=float(duration or 0.0))


def check_faults(faults: tuple[FaultSpec, ...], num_prefill: int, num_decode: int, num_nodes: int,
                 materialise_tokens: bool) -> None:  # fmt: skip
    """ValueError when a fault names what the deployment does not have, or cannot be followed."""
    sizes = {"prefill": num_prefill, "decode": num_decode, "node": num_nodes}
    back_at: dict[str, float] = {}  # instance -> when its previous outage ends (inf: never)
    for fault in sorted(faults, key=lambda f: f.at_s):
        if fault.index >= sizes[fault.role]:
            raise ValueError(
                f"{str(fault)!r}: the deployment has {sizes[fault.role]} {fault.role} "
                f"{'nodes' if fault.role == 'node' else 'instances'} (0..{sizes[fault.role] - 1})"
            )
        if fault.role != "node":
            if fault.at_s < back_at.get(fault.target, -1.0):
                raise ValueError(f"{str(fault)!r}: {fault.target} is still down from an earlier fault then")
            back_at[fault.target] = fault.at_s + fault.duration_s if fault.duration_s > 0 else math.inf
        if fault.role == "decode" and not materialise_tokens:
            raise ValueError(
                f"{str(fault)!r}: a decode fault needs --tokens (a counting-only run keeps no output "
                "tokens, so the router could not resume the requests that decode was streaming)"
            )


async def inject(
    cluster: InprocCluster, faults: tuple[FaultSpec, ...], started_s: float, applied: list[dict[str, Any]]
) -> None:
    """Applies `faults` at their instants after `started_s`, appending what each did to `applied` (as
    results.json's `sim.faults` lists it). Run as a task; cancelling it drops the faults not yet due."""
    # (instant, order, fault): an instance's restart comes before a fault due at the same instant
    events = [(f.at_s, 1, f) for f in faults]
    events += [(f.at_s + f.duration_s, 0, f) for f in faults if f.role != "node" and f.duration_s > 0]
    entries: dict[FaultSpec, dict[str, Any]] = {}
    for at_s, is_start, fault in sorted(events, key=lambda e: (e[0], e[1])):
        await cluster.clock.sleep_until(started_s + at_s)
        now_s = cluster.clock.now() - started_s
        if not is_start:
            await cluster.restart(fault.target)
            entries[fault]["back_s"] = now_s
            continue
        entry: dict[str, Any] = {"fault": str(fault), "applied_s": now_s}
        if fault.role == "node":
            entry["transfers_failed"] = cluster.fault_node(fault.index, fault.factor, fault.duration_s)
        elif fault.action == "kill":
            entry["calls_cut"] = await cluster.kill(fault.target)
        else:
            entry["calls_unanswered"] = await cluster.freeze(fault.target)
        entries[fault] = entry
        applied.append(entry)


def describe(entry: dict[str, Any]) -> str:
    """One line for an applied fault of `sim.faults`: what, when, and what it did."""
    parts = [
        f"{k.replace('_', ' ')} {v}" for k, v in entry.items() if k not in ("fault", "applied_s", "back_s")
    ]
    if "back_s" in entry:
        parts.append(f"back at {entry['back_s']:.1f} s")
    return f"{entry['fault']} at {entry['applied_s']:.1f} emulated s: {', '.join(parts)}"
