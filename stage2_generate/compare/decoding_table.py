"""A comparison's decoding accuracy beside its reconstructions: ``decoding.md`` / ``decoding.csv`` and the
numbers the figures' decoding panels show.

Stage 1 writes each run's decoding scores (per subject, ROI and layer: profile correlation, pattern
correlation, pairwise identification, their out-of-fold twins on the training images, the chosen penalty)
into the ``decoding`` section of the ``metrics.json`` of the results folder it ran for. Runs whose stage-1
inputs agree (``cache.stage1_key``: the same data, features, decoder and seed; every seed of a variant) share
one stage 1, run once: only the run that computed it holds the scores in its own folder, so each *group* of
runs sharing a stage 1 is one set of rows, read from the first of its results folders that holds them, else
from the folder of the run that computed it (named by its ``stage1-<key>.json`` marker in the store).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from shared.report import DECODING_COLUMNS, csv_table, decoding_rows, markdown_table, section_key, version_stamp
from shared.runs import atomic_write_text
from stage2_generate.compare.cache import stage1_key, stage1_marker, variant_paths
from stage2_generate.compare.spec import CompareSpec

log = logging.getLogger(__name__)

KEYS = ["variant", "shared_with", "decoder"]  # before DECODING_COLUMNS (subject, roi, layer, scores ...)
EXTRA = ["voxels_per_unit"]  # shown when a decoder records it (the sparse decoder)
SHOWN = ("profile_corr", "pattern_corr", "pairwise_id")  # the figures' decoding panels
SEP = "; "  # between variant names in `shared_with` (names may hold commas)


def decoding_groups(spec: CompareSpec, records: list[dict]) -> list[dict]:
    """One group per distinct stage 1 among the runs of ``spec.variants`` (``records`` in its order): its
    variant rows (``variants``, in order; seeds collapsed), the first run's config (``cfg``), the compare's test
    set (``split``), the scores (``decoding``: subject -> roi -> layer -> scores; None when no folder holds
    them) and the results folder they were read from (``source``)."""
    groups: dict[str, dict] = {}
    for v, rec in zip(spec.variants, records):
        g = groups.setdefault(stage1_key(v.cfg), {"variants": [], "cfg": v.cfg, "folders": [],
                                                  "split": next(iter(v.cfg.data.test))})
        if v.row not in g["variants"]:
            g["variants"].append(v.row)
        g["folders"].append(Path(rec["results"]))
    for g in groups.values():
        g["decoding"], g["source"] = _find(g)
        if g["decoding"] is None:
            log.warning("no stage-1 scores found for variant(s) %s (results %s): decoding.md leaves them out; "
                        "python -m stage1_decode run --config %s/config.yaml rewrites them (nothing is decoded again)",
                        ", ".join(g["variants"]), g["folders"][0], g["folders"][0])
    return list(groups.values())


def _find(g: dict) -> tuple[dict | None, str | None]:
    """The group's decoding section and its folder: from its own results folders, else from the folder of the
    run that computed its stage 1."""
    cfg = g["cfg"]
    marker = stage1_marker(variant_paths(cfg)[1], cfg)
    folders = list(g["folders"])
    if marker.is_file():
        config = json.loads(marker.read_text()).get("config")
        if config:
            folders.append(Path(config).parent)
    section = section_key("decoding", g["split"], next(iter(cfg.data.test)))
    for folder in dict.fromkeys(folders):
        path = folder / "metrics.json"
        found = json.loads(path.read_text()).get(section) if path.is_file() else None
        if found and all(roi in found.get(s, {}) for s in cfg.data.subjects for roi in cfg.data.rois):
            return found, str(folder)
    return None, None


def _shared(g: dict) -> str:
    return SEP.join(g["variants"][1:])


def table_rows(groups: list[dict]) -> list[dict]:
    """One row per group, subject, ROI and layer (in stage 1's order)."""
    return [{"variant": g["variants"][0], "shared_with": _shared(g), "decoder": g["cfg"].decoder.label, **row}
            for g in groups if g["decoding"] is not None for row in decoding_rows(g["decoding"])]


def write_decoding(out: Path, spec: CompareSpec, groups: list[dict]) -> None:
    """``decoding.md`` (ending with the result version's stamp) and ``decoding.csv``."""
    rows = table_rows(groups)
    columns = KEYS + DECODING_COLUMNS + [c for c in EXTRA if any(c in r for r in rows)]
    splits = sorted({g["split"] for g in groups})
    shared = [g for g in groups if len(g["variants"]) > 1]
    several = any(v.row != v.name for v in spec.variants)  # generator seeds
    head = (f"# Compare `{spec.name}`: feature decoding ({spec.path})\n\nStage 1's decoding scores of every variant "
            f"on the test set `{', '.join(splits) or '?'}` (the reconstruction tables' test images), one row per "
            f"distinct stage 1, subject, ROI and layer, copied from the `decoding` section of the `metrics.json` of "
            f"the run that computed it. Variants whose stage-1 inputs agree (the same data, features, decoder and "
            f"seed) share one stage 1 and so one set of rows: `variant` names the first, `shared_with` the others"
            f"{' (the generator seeds of a variant always share it: one row for all seeds)' if several else ''}. "
            f"Stage 1 records each score's mean only, so no interval is given: `profile_corr`, the mean over the "
            f"layer's units of each unit's correlation across the test images; `pattern_corr`, the mean over test "
            f"images of each image's correlation across units (z-scored by the training statistics); `pairwise_id`, "
            f"the mean over test images of the share of the other images whose true features correlate less with "
            f"the image's decoded features than its own true features do (chance 0.5). `oof_*`: the same on the training images decoded out of fold (each by a decoder "
            f"fit without it). `alpha`: the chosen penalty (`alpha_per` unit: the median over units). `decoder`: "
            f"the decoder's name in the feature store.\n\n")
    if shared:
        head += "Shared decodings: " + "; ".join(
            f"`{'`, `'.join(g['variants'])}`" for g in shared) + ".\n\n"
    missing = [v for g in groups if g["decoding"] is None for v in g["variants"]]
    if missing:
        head += (f"No stage-1 scores were found for `{'`, `'.join(missing)}` (neither its results folder nor the "
                 f"one that computed its stage 1 holds them): `python -m stage1_decode run --config "
                 f"<its results>/config.yaml` rewrites them.\n\n")
    body = markdown_table(rows, columns) if rows else "(no stage-1 scores found)\n"
    atomic_write_text(out / "decoding.md", head + body + version_stamp())
    atomic_write_text(out / "decoding.csv", csv_table(rows, columns))


def group_label(g: dict, n_rows: int) -> str:
    """A figure's name of a group: its variants (``all variants`` when it is every one)."""
    if len(g["variants"]) == n_rows and n_rows > 1:
        return "all variants"
    text = SEP.join(g["variants"])
    return text if len(text) <= 40 else text[:38] + "…"


def heatmaps(groups: list[dict], picks: list[tuple[dict, str, str, str]]) -> dict:
    """The figures' decoding panels: per score of ``SHOWN``, ``(row labels, layers, values)`` with one row per
    ``picks`` entry ``(group, label, subject, roi)`` and one column per layer any of them decoded (NaN where a
    group has not that layer)."""
    picks = [p for p in picks if p[0]["decoding"] is not None and p[3] in p[0]["decoding"].get(p[2], {})]
    if not picks:
        return {}
    layers = list(dict.fromkeys(layer for g, _, s, r in picks for layer in g["decoding"][s][r]))
    out = {}
    for score in SHOWN:
        values = np.array([[g["decoding"][s][r].get(layer, {}).get(score, np.nan) for layer in layers]
                           for g, _, s, r in picks], dtype=float)
        out[f"decoding: {score}"] = ([label for _, label, _, _ in picks], layers, values)
    return out
