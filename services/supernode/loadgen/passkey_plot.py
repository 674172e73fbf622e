"""passkey.png: accuracy heat maps (depth x length), one panel per policy; the usual
needle-in-a-haystack picture, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def heatmaps(results: dict, path: Path) -> Path:
    policies = list(results["policies"])
    fig, axes = plt.subplots(1, len(policies), figsize=(5.5 * len(policies), 4.2), constrained_layout=True)
    axes = [axes] if len(policies) == 1 else list(axes)
    image = None
    for ax, policy in zip(axes, policies, strict=True):
        rows = results["policies"][policy]
        lengths = sorted(int(n) for n in rows)
        depths = sorted({a["depth"] for r in rows.values() for a in r["answers"]})
        grid = [[0.0] * len(lengths) for _ in depths]
        for j, length in enumerate(lengths):
            for a in rows[str(length)]["answers"]:
                grid[depths.index(a["depth"])][j] = 1.0 if a["is_right"] else 0.0
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="upper")
        ax.set_xticks(range(len(lengths)), [_k(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("passkey depth")
        ax.set_title(f"{policy} (window {results.get('context_window')})")
    if image is not None:
        fig.colorbar(image, ax=axes, label="right answers")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _k(n: int) -> str:
    return f"{n // (1024 * 1024)}M" if n >= 1024 * 1024 else f"{n // 1024}K"
