"""A comparison's figures: per (subject, ROI) *view*, a bar plot (every metric with its interval, and stage 1's
decoding per layer beneath) and a grid of reconstructions.

A view is a position in the variants' ``data.subjects`` and ``data.rois``: view (i, k) shows each variant's
i-th subject and k-th ROI, named after the reference variant's (or, where it has no such position, the first
variant's that has), with rows on another subject or ROI (a ROI comparison: each variant its own ROI) labelled
with theirs. The first view, each variant's first subject and first ROI, is ``bars.png`` and ``grid.png``;
every other one ``bars_<subject>_<roi>.png`` and ``grid_<subject>_<roi>.png``. Each figure's title names its
subject and ROI. The tables have every row.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from shared.config import BASELINES, BASELINES_FROM_VOXELS
from shared.errors import UserError
from shared.evaluation import LOWER_IS_BETTER
from shared.report import named_test_images
from stage2_generate.compare.decoding_table import group_label, heatmaps
from stage2_generate.compare.report import metric_names, several_seeds
from stage2_generate.compare.spec import CompareSpec


def views(spec: CompareSpec) -> list[dict]:
    """Every (subject, ROI) position some variant has, first subject first: its ``subject`` and ``roi`` (the
    names in titles and file names), the ``anchor`` variant they come from (the reference where it has the
    position; its baselines are shown), ``at`` (variant row -> its (subject, ROI) there) and the file names'
    ``suffix`` (empty for the first view)."""
    cfgs: dict = {}
    for v in spec.variants:
        cfgs.setdefault(v.row, v.cfg)
    order = [spec.reference, *(r for r in cfgs if r != spec.reference)]
    n_sub = max(len(c.data.subjects) for c in cfgs.values())
    n_roi = max(len(c.data.rois) for c in cfgs.values())
    out: list[dict] = []
    for i in range(n_sub):
        for k in range(n_roi):
            at = {r: (c.data.subjects[i], c.data.rois[k]) for r, c in cfgs.items()
                  if len(c.data.subjects) > i and len(c.data.rois) > k}
            anchor = next((r for r in order if r in at), None)
            if anchor is None:
                continue
            subject, roi = at[anchor]
            suffix = "" if not out else f"_{_safe(subject)}_{_safe(roi)}"
            if any(o["suffix"] == suffix for o in out):
                suffix += f"_{i + 1}_{k + 1}"
            out.append({"subject": subject, "roi": roi, "anchor": anchor, "at": at, "suffix": suffix})
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", str(name))


def view_rows(spec: CompareSpec, rows: list[dict], view: dict, baselines: tuple[str, ...]) -> list[dict]:
    """What a view's figures show: each variant's method (and `also` methods) on its subject and ROI at the
    view, then the anchor variant's ``baselines`` there."""
    shown = [r for r in rows if r["method"] in (spec.method, *spec.also)
             and view["at"].get(r["variant"]) == (r["subject"], r["roi"])]
    where = view["at"][view["anchor"]]
    return shown + [r for r in rows if r["method"] in baselines and (r["subject"], r["roi"]) == where
                    and view["anchor"] in r.get("variants", [])]


def _label(spec: CompareSpec, r: dict) -> str:
    """A figure's name of a method row: the variant's name, with the method's when it is not `method`
    (only the method's when there is one variant)."""
    if len(spec.rows()) == 1 and spec.also:
        return r["method"]
    return r["variant"] if r["method"] == spec.method else f"{r['variant']}: {r['method']}"


def _where(view: dict, subject: str, roi: str) -> str:
    """`` (sub-02, V1)``: the subject and ROI of a row where they are not the view's."""
    parts = [x for x, y in ((subject, view["subject"]), (roi, view["roi"])) if x != y]
    return f" ({', '.join(parts)})" if parts else ""


def write_figures(out: Path, spec: CompareSpec, rows: list[dict], groups: list[dict], title: str,
                  columns: int) -> list[str]:
    """``bars*.png`` and ``grid*.png`` of every view; the names written."""
    names = []
    for view in views(spec):
        bars, grid = f"bars{view['suffix']}.png", f"grid{view['suffix']}.png"
        if bars_plot(spec, rows, groups, view, out / bars, title):
            names.append(bars)
        if compare_grid(spec, rows, view, out / grid, columns):
            names.append(grid)
    return names


def bars_plot(spec: CompareSpec, rows: list[dict], groups: list[dict], view: dict, path: Path, title: str) -> bool:
    """One panel per metric: each variant's method at the view, then the anchor variant's baselines, each mean
    with its bootstrap interval (over seeds and images); beneath, stage 1's decoding scores per layer of every
    distinct stage 1 (``decoding.md``). False (nothing written) when the view has no row."""
    from shared.plotting import interval_bars

    shown = view_rows(spec, rows, view, BASELINES)
    if not shown:
        return False
    labels = [_label(spec, r) + _where(view, r["subject"], r["roi"]) if r["method"] not in BASELINES
              else f"{r['method']} ({r['roi']})" for r in shown]
    kinds = ["baseline" if r["method"] in BASELINES else "method" for r in shown]
    nan = {"mean": np.nan, "lo": np.nan, "hi": np.nan}
    panels = {m + (" (lower is better)" if m in LOWER_IS_BETTER else ""):
              [tuple(r["summary"].get(m, nan)[k] for k in ("mean", "lo", "hi")) for r in shown]
              for m in metric_names(shown)}
    n_rows = len(spec.rows())
    picks = [(g, group_label(g, n_rows) + _where(view, *view["at"][g["variants"][0]]), *view["at"][g["variants"][0]])
             for g in groups if g["variants"][0] in view["at"]]
    maps = heatmaps(groups, picks)
    below = "; beneath: stage 1's decoding (decoding.md)" if maps else ""
    interval_bars(labels, kinds, panels, path, f"{title}; {spec.method} per variant ({view['subject']}, "
                                               f"{view['roi']} unless named), baselines in grey{below}", maps)
    return True


def compare_grid(spec: CompareSpec, rows: list[dict], view: dict, path: Path, columns: int) -> bool:
    """True images on top, one row per variant (its subject and ROI at the view; its first seed's
    reconstructions), the same test images in every row, and the anchor variant's pixel-ridge baseline at the
    bottom; from the saved files alone. False (nothing written) when the view has no row."""
    from shared.plotting import image_grid
    from stage2_generate.recon_files import method_paths, read_reconstructions, read_stimuli, to_rgb

    split = next(iter(spec.variant(spec.reference).cfg.data.test))
    shown = view_rows(spec, rows, view, BASELINES_FROM_VOXELS)  # pixel ridge: the bottom row
    if not shown:
        return False
    anchor = next((r for r in shown if r["variant"] == view["anchor"]), shown[0])
    true, names = read_stimuli(Path(anchor["results"]), split)
    names = names[:columns]
    picked: dict[str, np.ndarray] = {}
    for r in shown:
        h5, _ = method_paths(Path(r["results"]) / "reconstructions" / r["subject"] / r["roi"] / split, r["method"])
        if not h5.is_file():
            raise UserError(f"{h5} is missing; rerun stage 2 of that variant (delete {r['results']}) and compare")
        images, rec_names = read_reconstructions(h5)
        index = {n: i for i, n in enumerate(rec_names)}
        label = (_label(spec, r) + _where(view, r["subject"], r["roi"]) if r["method"] not in BASELINES
                 else f"{r['method']} (baseline)")
        if label == "true":  # a variant named like the stimulus row (e.g. train_inputs 'true')
            label = "variant true"
        picked[label] = to_rgb(images[[index[n] for n in names]])
    first_seed = f" (generator seed {spec.variant(spec.reference).seed})" if several_seeds(rows) else ""
    image_grid({"true": true[:columns], **picked}, path,
               title=f"compare {spec.name}: {view['subject']}, {view['roi']} (other subjects and ROIs named), "
                     f"{named_test_images(split)}, {spec.method} per variant{first_seed}", columns=columns)
    return True
