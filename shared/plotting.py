"""Figures: reconstruction grids and decoding-accuracy plots (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from shared.runs import atomic_write_bytes


DPI = 110


def figure_bytes(fig, fmt: str = "png", tight: bool = True) -> bytes:
    """``fig`` encoded as ``fmt``, closed; ``tight`` crops to what is drawn (one more draw of the figure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # no creation date in a PDF, so the same figure gives the same bytes
    fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight" if tight else None,
                metadata={"CreationDate": None} if fmt == "pdf" else None)
    plt.close(fig)
    return buf.getvalue()


def image_grid(rows: dict[str, np.ndarray], path: Path, title: str = "", columns: int | None = None,
               cell: float = 1.1) -> None:
    """Save a grid: one row per entry of ``rows`` (``(n, C, H, W)`` in [0, 1], C 1 or 3); the first
    entry (the true images) goes on top. Row labels are written on the left. ``cell`` is
    the side of one image in inches (at 110 dpi); a ``.pdf`` path writes a PDF.

    The cells are laid into one mosaic drawn as a single image (an axes per cell would cost
    a second a grid at a 10 x 6 grid, drawn at every tick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(v) for v in rows.values())
    if columns:
        n = min(n, columns)
    mosaic, (h, w), gap = _mosaic(rows, n)
    size = cell
    fig_w, fig_h = n * size + 1.4, len(rows) * size + (0.5 if title else 0.1)
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((1.3 / fig_w, 0.05 / fig_h, n * size / fig_w, len(rows) * size / fig_h))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for r, label in enumerate(rows):
        ax.text(-gap, r * (h + gap) + h / 2 - 0.5, label, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    atomic_write_bytes(path, figure_bytes(fig, Path(path).suffix.lstrip(".") or "png"))


def _mosaic(rows: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, tuple[int, int], int]:
    """The first ``n`` images of each row side by side, rows stacked, on white with a gap of 4 % of
    a cell between cells; each image is brought to the largest height and width by nearest
    neighbour. Returns the ``(H, W, 3)`` mosaic, the cell's ``(h, w)`` and the gap in pixels."""
    h = max(v.shape[-2] for v in rows.values())
    w = max(v.shape[-1] for v in rows.values())
    gap = max(1, round(0.04 * max(h, w)))
    mosaic = np.ones((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), dtype=np.float32)
    for r, imgs in enumerate(rows.values()):
        for c in range(n):
            img = np.asarray(imgs[c], dtype=np.float32)
            img = img[:, np.arange(h) * img.shape[1] // h][:, :, np.arange(w) * img.shape[2] // w]
            y, x = r * (h + gap), c * (w + gap)
            mosaic[y:y + h, x:x + w] = np.clip(np.broadcast_to(img, (3, h, w)).transpose(1, 2, 0), 0, 1)
    return mosaic, (h, w), gap


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
    atomic_write_bytes(path, figure_bytes(fig))


def training_plot(stats: list[dict], paths: list[Path], best_step: int | None = None, why: str = "") -> None:
    """Losses and validation scores (``val_*``) from ``stats.jsonl`` records against generator step,
    drawn once and written to each of ``paths``; ``best_step`` (the tick that reconstructs) is marked
    on every panel, the title saying ``why`` it was taken (default: chosen on the validation images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in stats[0] if k.startswith(("loss_", "val_")) or k in ("wasserstein", "gp")]
    cols = min(len(keys), 5)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), squeeze=False)
    steps = [s["step"] for s in stats]
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [s.get(key) for s in stats], color="#1f5fa8" if key.startswith("val_") else "#444444")
        if best_step is not None:
            ax.axvline(best_step, color="#c0392b", lw=0.8, ls="--")
        ax.set_title(key + (" (validation)" if key.startswith("val_") else ""), fontsize=9)
        ax.set_xlabel("generator step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if best_step is not None:
        fig.suptitle(f"dashed: step {best_step}, the tick that reconstructs "
                     f"({why or 'chosen on the validation images, within their noise'})", fontsize=9)
    # fixed margins: redrawn at every tick, where tight_layout and a tight crop would double its cost
    fig.subplots_adjust(left=0.05, right=0.985, bottom=0.45 / (2.8 * rows), top=1 - 0.55 / (2.8 * rows),
                        wspace=0.3, hspace=0.6)
    png = figure_bytes(fig, tight=False)
    for path in paths:
        atomic_write_bytes(path, png)


KIND_COLOURS = {"method": "#1f5fa8", "baseline": "#9e9e9e"}


def interval_bars(labels: list[str], kinds: list[str], panels: dict[str, list[tuple[float, float, float]]],
                  path: Path, title: str = "", heatmaps: dict | None = None) -> None:
    """Horizontal bars, one panel per metric: ``panels[metric]`` holds ``(mean, lo, hi)`` per label;
    ``kinds`` colours each bar (``method`` or ``baseline``). ``heatmaps`` (title -> ``(row labels, column
    labels, values)``, values ``(rows, columns)``, NaN grey) adds a row of annotated heatmaps beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heatmaps = heatmaps or {}
    per_row = max(1, min(3, len(panels)))
    cols = max(per_row, len(heatmaps))
    nrow = -(-len(panels) // per_row)
    bar_h = 0.32 * len(labels) + 1.2
    heat_h = 0.3 * max(len(v[0]) for v in heatmaps.values()) + 1.8 if heatmaps else 0
    fig = plt.figure(figsize=(4.2 * cols, bar_h * nrow + heat_h))
    grid = fig.add_gridspec(nrow + bool(heatmaps), cols, height_ratios=[bar_h] * nrow + ([heat_h] if heatmaps else []))
    axes = [fig.add_subplot(grid[i // per_row, i % per_row]) for i in range(len(panels))]
    y = np.arange(len(labels))
    colours = [KIND_COLOURS.get(k, "#1f5fa8") for k in kinds]
    for i, (ax, (metric, values)) in enumerate(zip(axes, panels.items())):
        v = np.array(values, dtype=float)
        ax.barh(y, v[:, 0], xerr=np.abs(np.stack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])), color=colours, capsize=2)
        ax.set_yticks(y)
        ax.set_yticklabels(labels if i % per_row == 0 else [], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=9)
        ax.set_xlim(min(np.nanmin(v[:, 1]), 0), max(1.0, np.nanmax(v[:, 2])))
        ax.tick_params(labelsize=7)
    for j, (name, (rows, columns, values)) in enumerate(heatmaps.items()):
        _heatmap(fig.add_subplot(grid[nrow, j]), name, rows if j == 0 else [], columns, np.asarray(values, float))
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))
    if title:
        fig.suptitle(title, fontsize=9)
    atomic_write_bytes(path, figure_bytes(fig))


def _heatmap(ax, title: str, rows: list[str], columns: list[str], values: np.ndarray) -> None:
    """``values`` as colours (viridis over the panel's own range, NaN grey), each cell annotated."""
    import matplotlib.pyplot as plt

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1e-9
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=lo, vmax=hi)
    for (r, c), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if (v - lo) / (hi - lo) < 0.6 else "black")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(values.shape[0]))
    ax.set_yticklabels(rows, fontsize=7)
    ax.set_title(title, fontsize=9)
