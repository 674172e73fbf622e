"""Generates the sample Mooncake trace shipped in `traces/sample_mooncake.jsonl`.

`python -m supernode.loadgen.trace_gen [PATH]` rewrites it; the output depends only on the seed. The
shape is Mooncake-like and kept small: Poisson arrivals, a few popular shared prefixes (system prompts and
documents, Zipf-weighted), then request-unique blocks; log-normal output lengths.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from supernode.loadgen.trace import MOONCAKE_BLOCK_TOKENS

SAMPLE_PATH = Path(__file__).parent / "traces" / "sample_mooncake.jsonl"
SAMPLE_SEED = 20250612
NUM_PREFIXES = 12


def generate_sample(num_requests: int = 200, seed: int = SAMPLE_SEED, rate_per_s: float = 2.0) -> list[dict]:
    """Trace records as dicts (pure)."""
    rng = random.Random(seed)
    prefixes = [list(range(p * 16, p * 16 + rng.randint(1, 6))) for p in range(NUM_PREFIXES)]
    weights = [1.0 / (rank + 1) for rank in range(NUM_PREFIXES)]
    next_id = NUM_PREFIXES * 16
    now_ms = 0.0
    out: list[dict] = []
    for _ in range(num_requests):
        shared = rng.choices(prefixes, weights)[0] if rng.random() < 0.7 else []
        num_own = rng.randint(1, 4)
        hash_ids = shared + list(range(next_id, next_id + num_own))
        next_id += num_own
        input_length = len(hash_ids) * MOONCAKE_BLOCK_TOKENS - rng.randint(0, MOONCAKE_BLOCK_TOKENS - 1)
        output_length = max(4, min(1024, round(rng.lognormvariate(4.6, 0.7))))
        out.append(
            {
                "timestamp": int(now_ms),
                "input_length": input_length,
                "output_length": output_length,
                "hash_ids": hash_ids,
            }
        )
        now_ms += rng.expovariate(rate_per_s) * 1000.0
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SAMPLE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in generate_sample()))
    sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
