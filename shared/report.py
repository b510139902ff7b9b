"""Human-readable results: Markdown and CSV tables, and the experiment summary.

Everything here is rendered from ``metrics.json``, so the summary always shows what
the metrics say; each stage rewrites the summary after updating its section.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from shared.runs import atomic_write_text


def section_key(kind: str, split: str, first: str) -> str:
    """``metrics.json`` section of a test set: ``kind`` for the first, ``kind_<split>`` for others."""
    return kind if split == first else f"{kind}_{split}"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:g}" if abs(v) >= 1000 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_table(base: Path, rows: list[dict], columns: list[str]) -> None:
    """``<base>.md`` and ``<base>.csv``."""
    atomic_write_text(base.with_suffix(".md"), markdown_table(rows, columns))
    atomic_write_text(base.with_suffix(".csv"), csv_table(rows, columns))


DECODING_COLUMNS = ["subject", "roi", "layer", "profile_corr", "pattern_corr", "pairwise_id", "oof_profile_corr",
                    "oof_pattern_corr", "oof_pairwise_id", "alpha", "alpha_per", "n_voxels", "n_units"]
VALIDATION_SECTION = "reconstruction_validation"  # metrics.json: every method's scores on the validation hold-out
ROW_VALUES = ("alpha", "pixel_size", "contrast_gain")  # a method's ``row()`` values kept in metrics.json, not shown as metric columns


def recon_columns(recon: dict) -> list[str]:
    """``subject``, ``method``, then the metrics in ``evaluation.metric_order``."""
    from shared.evaluation import metric_order

    keys = [k for by_method in recon.values() for m in by_method.values() for k, v in m.items()
            if not isinstance(v, dict) and k not in ROW_VALUES]
    return ["subject", "method", *metric_order(keys)]


def metric_legend(columns: list[str]) -> str:
    """One line per metric column: what it holds (``evaluation.metric_label``)."""
    from shared.evaluation import metric_label

    return "\n".join(f"- `{c}`: {metric_label(c)}" for c in columns if c not in ("subject", "method")) + "\n"


def decoding_rows(decoding: dict) -> list[dict]:
    """One row per (subject, roi, layer); out-of-fold training scores as ``oof_*`` columns."""
    return [{"subject": s, "roi": r, "layer": layer, **{k: v for k, v in m.items() if not isinstance(v, dict)},
             **{f"oof_{k}": v for k, v in m.get("train_oof", {}).items()}}
            for s, by_roi in decoding.items() for r, by_layer in by_roi.items() for layer, m in by_layer.items()]


def recon_rows(recon: dict) -> list[dict]:
    return [{"subject": s, "method": method, **{k: v for k, v in m.items() if not isinstance(v, dict)}}
            for s, by_method in recon.items() for method, m in by_method.items()]


def write_summary(results: Path, metrics: dict) -> None:
    """Render ``summary.md`` from ``metrics`` (whatever sections exist so far)."""
    parts = [f"# Results: {metrics.get('experiment', results.name)}\n"]
    info = metrics.get("info", {})
    if info:
        parts.append(f"Feature network: **{info.get('network')}**, weights **{info.get('weights_label')}**, "
                     f"layers {', '.join(info.get('layers', []))}; data: {info.get('data')}.\n")
    data = metrics.get("data", {})
    if data:
        parts.append("## Data\n")
        rows = [{"subject": s, "roi": r, **v} for s, by_roi in data.items() for r, v in by_roi.items()]
        parts.append(markdown_table(rows, ["subject", "roi", "n_voxels", "n_train_trials", "n_train_images",
                                           "reliability_median"]))
        parts.append("`reliability_median`: median over voxels of the correlation across training images "
                     "between two repetitions (single trials).\n")
    for key, value in metrics.items():
        if key.startswith("decoding") and value:
            split = key.split("decoding_", 1)[1] if "_" in key else metrics.get("info", {}).get("test_set", "test")
            parts.append(f"## Feature decoding ({split} test images)\n")
            parts.append(markdown_table(decoding_rows(value), DECODING_COLUMNS))
            parts.append("`oof_*`: the training images decoded out of fold (each by a decoder fit without it); "
                         "they should score close to the test images. `alpha_per`: one penalty per layer or per "
                         "unit (then `alpha` is the median over units).\n")
    if (results / "decoding.png").is_file():
        parts.append("![decoding accuracy per layer](decoding.png)\n")
    recon_info = metrics.get("reconstruction_info", {})
    for key, value in metrics.items():
        if key.startswith("reconstruction") and key not in ("reconstruction_info", VALIDATION_SECTION) and value:
            split = key.split("reconstruction_", 1)[1] if "_" in key else metrics.get("info", {}).get("test_set", "test")
            parts.append(f"## Reconstruction ({split} test images)\n")
            parts.append(markdown_table(recon_rows(value), recon_columns(value)))
            if recon_info.get("score_size"):
                parts.append(f"Scored at {recon_info['score_size']['pixels']} px ({recon_info['score_size']['label']}).\n")
            judges = "; ".join(f"`{k}`: {v}" for k, v in recon_info.get("judge", {}).items())
            parts.append(metric_legend(recon_columns(value)))
            parts.append("The judge network (never a network a training loss or an optimisation uses): "
                         f"{judges}. `wgan_gp`: generator from decoded features; `wgan_gp_true_features`: the "
                         "same generator fed the true features (true-feature input: a reference, not a bound; a "
                         "method from decoded features can beat it); `pixel_ridge`: ridge from voxels to pixels"
                         + _pixel_ridge_fits(value) + "; `nearest_train`: the training image whose true "
                         "features best match the decoded ones."
                         + (" `inversion_dgn`: iterative inversion of the decoded features (Shen et al. 2019) "
                            "through the generator, from its reconstruction; `inversion_pixels`: the same "
                            "inversion of the pixels, from the mean training image."
                            if recon_info.get("methods") else "") + "\n")
    parts += _training_parts(recon_info, metrics.get(VALIDATION_SECTION), results)
    for grid in sorted(results.glob("grid*.png")):
        parts.append(f"![{grid.stem}]({grid.name})\n")
    atomic_write_text(results / "summary.md", "\n".join(parts))


def _pixel_ridge_fits(recon: dict) -> str:
    """`` (fitted at 8 px, contrast x1.81; ...)``: each pixel-ridge row's size, chosen by cross-validation on
    the training images, and its contrast gain, chosen on the validation hold-out (1 = as fitted)."""
    fits = [f"{method}: {m['pixel_size']} px, " + (f"contrast x{m['contrast_gain']:.2f}" if m["contrast_gain"] != 1
                                                   else "contrast as fitted")
            for by_method in recon.values() for method, m in by_method.items() if "pixel_size" in m]
    if not fits:
        return ""
    return (" (its size chosen by cross-validation on the training images, its contrast on the validation "
            "hold-out; the scores behind both choices are in metrics.json: " + "; ".join(fits) + ")")


def _training_parts(recon_info: dict, validation: dict | None, results: Path) -> list[str]:
    """The generator's training as the summary states it: the tick that reconstructs, its validation
    scores beside the other methods', and every rollback of a dead tick (a finished run never hides one)."""
    g = recon_info.get("generator", {})
    if not g:
        return []
    parts = ["## Training and validation\n"]
    val = recon_info.get("validation", {})
    rollbacks = g.get("rollbacks") or []
    if val.get("n_images"):
        parts.append(f"{val['n_images']} of the {val['n_images'] + val['n_train_images']} training images were held "
                     f"out for validation (never in a generator batch nor in any method's fit). The generator of "
                     f"step {g.get('best_step')} of {g.get('iterations')} reconstructs: it scored best on them by "
                     f"`{val['metric']}` ({g.get('best_score'):.3f}).\n")
    else:
        parts.append("No validation hold-out (eval.validation_fraction=0): the last step's generator reconstructs.\n")
    if rollbacks:
        parts.append(f"**{len(rollbacks)} rollback(s) of a dead output** (learning rate cut each time):\n")
        parts += [f"- step {r['step']}: {r['cause']}; learning rate now {r['lr']:.2g}" for r in rollbacks]
        parts.append("")
    else:
        parts.append("No tick had a dead output (no rollback).\n")
    if validation:
        parts.append("Scores on the held-out training images (their out-of-fold decoded features; the voxel "
                     "methods from their averaged trials). Settings chosen here score here too: the generator's "
                     "tick and pixel ridge's contrast.\n")
        parts.append(markdown_table(recon_rows(validation), recon_columns(validation)))
    if (results / "training.png").is_file():
        parts.append("![training curves](training.png)\n")
    return parts
