"""The fidelity benchmark's report: rows of measured vs model, and reports/fidelity.{json,md}."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fidelity_host import HostUse, markdown

REPORTS = Path("reports")


@dataclass
class Row:
    scenario: str
    metric: str
    measured: float
    model: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.measured - self.model) / self.model if self.model else 0.0

    def as_dict(self) -> dict[str, float | str]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "measured": round(self.measured, 4),
            "model": round(self.model, 4),
            "error_pct": round(self.error_pct, 2),
        }


def write(rows: list[Row], uses: dict[str, HostUse], scales: dict[str, float]) -> None:
    """reports/fidelity.{json,md}; `scales`: the time scale each scenario was measured at."""
    REPORTS.mkdir(exist_ok=True)
    records = [{**r.as_dict(), "time_scale": scales.get(r.scenario, 0.0)} for r in rows]
    (REPORTS / "fidelity.json").write_text(json.dumps(records, indent=2) + "\n")
    lines = [
        "# Fidelity: the live stack vs `supernode model`",
        "",
        "Emulated time throughout; each scenario at the largest time scale at which the host kept up.",
        "",
        "| scenario | time scale | metric | measured | model | error % |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.scenario} | {scales.get(r.scenario, 0.0):g} | {r.metric} | {r.measured:.1f} | {r.model:.1f} "
        f"| {r.error_pct:+.1f} |"
        for r in rows
    ]
    kept = ", ".join(f"{n}: {'yes' if u.kept_up else 'NO, ' + (u.problem or 'lag')}" for n, u in uses.items())
    lines += ["", f"Host kept up: {kept}.", ""]
    lines += [
        "How the host kept up (benchmarks/fidelity_host.py; lag under 2%, prefill burst idle under 2%):",
        "",
    ]
    lines += markdown(uses)
    (REPORTS / "fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
