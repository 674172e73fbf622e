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


def write(rows: list[Row], uses: dict[str, HostUse], scale: float) -> None:
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "fidelity.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
    lines = [
        "# Fidelity: the live stack vs `supernode model`",
        "",
        f"time_scale {scale}; emulated time throughout.",
        "",
        "| scenario | metric | measured | model | error % |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.scenario} | {r.metric} | {r.measured:.1f} | {r.model:.1f} | {r.error_pct:+.1f} |" for r in rows
    ]
    lines += ["", "How the host kept up (benchmarks/fidelity_host.py; lag is the pass mark, under 2%):", ""]
    lines += markdown(uses)
    (REPORTS / "fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
