"""`make bench`: runs every benchmarks/bench_*.py `run()` and merges the figures into reports/bench.json.

reports/bench.json is one flat object of named figures; names are a stable interface once published.
`python -m benchmarks NAME...` runs only the named modules (e.g. `cost fabric`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

REPORT = Path("reports/bench.json")


def main(argv: list[str]) -> int:
    names = argv or sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    figures: dict[str, float] = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    failed = []
    for name in names:
        started = time.perf_counter()
        print(f"bench {name} ...", flush=True)
        try:
            result = importlib.import_module(f"benchmarks.bench_{name}").run()
        except Exception as err:  # one broken benchmark must not hide the others' figures
            print(f"bench {name} FAILED: {err!r}", flush=True)
            failed.append(name)
            continue
        figures.update(result)
        for key, value in result.items():
            print(f"  {key} = {value:.6g}", flush=True)
        print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"wrote {REPORT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
