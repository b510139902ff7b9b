"""Figures: reconstruction grids and decoding-accuracy plots (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from shared.runs import atomic_write_bytes


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_grid(rows: dict[str, np.ndarray], path: Path, title: str = "", columns: int | None = None) -> None:
    """Save a grid: one row per entry of ``rows`` (``(n, 3, H, W)`` in [0, 1]); the first
    entry (the true images) goes on top. Row labels are written on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(v) for v in rows.values())
    if columns:
        n = min(n, columns)
    size = 1.1
    fig, axes = plt.subplots(len(rows), n, figsize=(n * size + 1.4, len(rows) * size + (0.5 if title else 0.1)),
                             squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(imgs[c].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    atomic_write_bytes(path, _figure_bytes(fig))


def decoding_plot(decoding: dict, layers: list[str], path: Path, title: str = "") -> None:
    """Profile and pattern correlation and pairwise identification per layer, a line per
    (subject, ROI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("profile_corr", "profile correlation"), ("pattern_corr", "pattern correlation"),
            ("pairwise_id", "pairwise identification")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (key, label) in zip(axes, keys):
        for subject, by_roi in decoding.items():
            for roi, by_layer in by_roi.items():
                ys = [by_layer[layer][key] if layer in by_layer else np.nan for layer in layers]
                ax.plot(range(len(layers)), ys, marker="o", label=f"{subject} {roi}")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.axhline(0.5 if key == "pairwise_id" else 0.0, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    atomic_write_bytes(path, _figure_bytes(fig))


def training_plot(stats: list[dict], path: Path) -> None:
    """Losses from ``stats.jsonl`` records against generator step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in stats[0] if k.startswith("loss_") or k in ("wasserstein", "gp")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.8), squeeze=False)
    steps = [s["step"] for s in stats]
    for ax, key in zip(axes[0], keys):
        ax.plot(steps, [s[key] for s in stats])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("generator step", fontsize=8)
        ax.grid(alpha=0.3)
    atomic_write_bytes(path, _figure_bytes(fig))
