"""Human-readable results: Markdown and CSV tables, and the experiment summary.

Everything here is rendered from ``metrics.json``, so the summary always shows what
the metrics say; each stage rewrites the summary after updating its section.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from shared.runs import atomic_write_text

# The result version: raised whenever a change makes earlier outputs no longer what the code gives (numbers,
# rows or meanings of columns). Every Markdown table the product writes ends with its stamp, and the generated
# docs (tools/make_docs.py) mark numbers and tables from outputs of an older version as stale.
#   1: the early comparisons (pixel ridge fitted at 32 px, no validation hold-out: results/reference/compare/*);
#   2: a validation hold-out, an unsquashed generator output, pixel ridge's size and contrast chosen;
#   3: the validation hold-out decoded like a test split, seeds in compare, noise-aware tick choice.
# Versions 1 and 2 wrote no stamp: an unstamped output counts as older than 3 (the docs call it stale).
RESULT_VERSION = 3
_STAMP = "<!-- npp result version {} -->"
_STAMP_RE = re.compile(r"<!-- npp result version (\d+) -->")


def version_stamp() -> str:
    """The line that ends every Markdown table file the product writes (an HTML comment: GitHub hides it)."""
    return _STAMP.format(RESULT_VERSION) + "\n"


def read_result_version(path: Path) -> int | None:
    """The result version a table file was made by: a ``.md`` file's stamp, a ``.csv`` file's ``.md`` twin's, a
    JSON file's top-level ``result_version``; ``None`` when it has none (made before stamps existed)."""
    path = Path(path)
    if path.suffix == ".csv":
        path = path.with_suffix(".md")
    if not path.is_file():
        return None
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        version = data.get("result_version") if isinstance(data, dict) else None
        return int(version) if version is not None else None
    found = _STAMP_RE.findall(text)
    return int(found[-1]) if found else None


def named_test_images(split: str) -> str:
    """How titles name a test set's images: ``natural test images``, or ``test images`` for a set called ``test``."""
    return "test images" if split == "test" else f"{split} test images"


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
    """``<base>.md`` (ending with the result version's stamp) and ``<base>.csv`` (plain, for CSV readers: its
    version is its ``.md`` twin's)."""
    atomic_write_text(base.with_suffix(".md"), markdown_table(rows, columns) + version_stamp())
    atomic_write_text(base.with_suffix(".csv"), csv_table(rows, columns))


DECODING_COLUMNS = ["subject", "roi", "layer", "profile_corr", "pattern_corr", "pairwise_id", "oof_profile_corr",
                    "oof_pattern_corr", "oof_pairwise_id", "alpha", "alpha_per", "n_voxels", "n_units"]
VALIDATION_SECTION = "reconstruction_validation"  # metrics.json: every method's scores on the validation hold-out
ROW_VALUES = ("alpha", "pixel_size", "contrast_gain", "blend_weight", "blend_mode")  # a method's ``row()`` values kept in metrics.json, not shown as metric columns


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
            parts.append("## Feature decoding (validation hold-out: held-out training images, decoded like test "
                         "images by decoders that never saw them)\n" if split == "validation"
                         else f"## Feature decoding ({named_test_images(split)})\n")
            parts.append(markdown_table(decoding_rows(value), DECODING_COLUMNS))
            parts.append("`oof_*`: the training images decoded out of fold (each by a decoder fit without it); "
                         "they should score close to the test images. `alpha_per`: one penalty per layer or per "
                         "unit (then `alpha` is the median over units).\n")
    if (results / "decoding.png").is_file():
        parts.append("![decoding accuracy per layer](decoding.png)\n")
    recon_info = metrics.get("reconstruction_info", {})
    if recon_info.get("lab_import"):  # stage 2 on imported features ran with other settings than configured
        parts.append(f"**{recon_info['lab_import']['note']}**\n")
    for key, value in metrics.items():
        if key.startswith("reconstruction") and key not in ("reconstruction_info", VALIDATION_SECTION) and value:
            split = key.split("reconstruction_", 1)[1] if "_" in key else metrics.get("info", {}).get("test_set", "test")
            parts.append(f"## Reconstruction ({named_test_images(split)})\n")
            parts.append(markdown_table(recon_rows(value), recon_columns(value)))
            seen = recon_info.get("test_in_train", {}).get(split)
            if seen:
                parts.append(f"**{len(seen)} of these test images are also training images** (equal pixels: "
                             f"{', '.join(seen[:5])}{' ...' if len(seen) > 5 else ''}); `nearest_train` retrieves "
                             f"them exactly, by construction, so its scores on them measure retrieval, not "
                             f"reconstruction.\n")
            if recon_info.get("score_size"):
                parts.append(f"Scored at {recon_info['score_size']['pixels']} px ({recon_info['score_size']['label']}).\n")
            judges = "; ".join(f"`{k}`: {v}" for k, v in recon_info.get("judge", {}).items())
            parts.append(metric_legend(recon_columns(value)))
            parts.append("The judge network (never a network a training loss or an optimisation uses): "
                         f"{judges}.\n")
            described = recon_info.get("methods_described", {})
            shown = dict.fromkeys(m.split("[")[0] for by_method in value.values() for m in by_method)
            lines = [f"- `{m}`: {described[m]}" for m in shown if m in described]
            if lines:  # each method's text lives with the method (its ``describe``), carried by metrics.json
                parts.append("The methods (rows of ROIs after the first carry the ROI, e.g. `wgan_gp[LVC]`):\n\n"
                             + "\n".join(lines) + "\n")
            if _pixel_ridge_fits(value):
                parts.append("Pixel ridge" + _pixel_ridge_fits(value) + ".\n")
    parts += _training_parts(recon_info, metrics.get(VALIDATION_SECTION), results)
    parts += _method_ticks(metrics.get("reconstruction", {}))
    for grid in sorted(results.glob("grid*.png")):
        parts.append(f"![{grid.stem}]({grid.name})\n")
    atomic_write_text(results / "summary.md", "\n".join(parts) + version_stamp())


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


def _method_ticks(recon: dict) -> list[str]:
    """One line per trained method (``end_to_end``, the image coders, the latent map) and subject × ROI: the tick
    that reconstructs and why, from the ``training`` record beside its scores."""
    lines = []
    for subject, methods in recon.items():
        for key, row in methods.items():
            dead = ((row.get("coder") or {}).get("dead")) if isinstance(row, dict) else None
            if dead:  # a coder that never left the mean image: its rows are not the method's
                lines.append(f"- **`{key}` ({subject}): its image coder did not train**: {dead}")
            t = (row.get("training") or row.get("tuning")) if isinstance(row, dict) else None
            if not isinstance(t, dict) or "step" not in t:
                continue
            choice = t.get("tick_choice") or t  # end_to_end nests the choice; the latent map's record is flat
            if t.get("holdout_too_small"):
                why = f"the hold-out ({t.get('holdout_images')} images) is too small to choose within noise: the last tick"
            elif choice.get("beyond_noise"):
                why = f"it beat the last tick beyond noise ({choice.get('gain', 0):+.3f})"
            else:
                why = "no earlier tick beat the last beyond noise"
            lines.append(f"- `{key}` ({subject}): step {t['step']} reconstructs; {why}")
    return (["Trained methods' ticks (the generator's rule, on the same hold-out):\n", *lines, ""]) if lines else []


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
        choice = g.get("tick_choice") or {}
        why = ""
        if g.get("holdout_too_small"):
            why = (f" **The hold-out is too small to choose a tick within noise** ({val['n_images']} images): the "
                   f"last tick reconstructs.")
        elif choice.get("highest_step") not in (None, choice.get("last_step")):
            why = (f" Step {choice['highest_step']} scored highest ({choice['highest_score']:.3f}), "
                   f"{choice['gain']:+.3f} over the last tick (lower bootstrap bound {choice['gain_low']:+.3f}): "
                   + ("beyond noise, so it reconstructs." if choice.get("beyond_noise")
                      else "within noise, so the last tick reconstructs."))
        score = g.get("best_score")
        parts.append(f"{val['n_images']} of the {val['n_images'] + val['n_train_images']} training images were held "
                     f"out for validation before stage 1 (never in a decoder's fit, a generator batch or any method's "
                     f"fit; decoded like the test images). The generator of step {g.get('best_step')} of "
                     f"{g.get('iterations')} reconstructs (`{val['metric']}` "
                     f"{'n/a' if score is None else f'{score:.3f}'} on them).{why} Rule: {g.get('tick_rule', '')}\n")
    elif "validation_fraction" in recon_info.get("lab_import", {}):
        parts.append("No validation hold-out (the imported lab files hold no decoded held-out training images, so "
                     "eval.validation_fraction was set to 0): the last step's generator reconstructs.\n")
    else:
        parts.append("No validation hold-out (eval.validation_fraction=0): the last step's generator reconstructs.\n")
    if rollbacks:
        parts.append(f"**{len(rollbacks)} rollback(s) of a dead output** (learning rate cut each time):\n")
        parts += [f"- step {r['step']}: {r['cause']}; learning rate now {r['lr']:.2g}" for r in rollbacks]
        parts.append("")
    else:
        parts.append("No tick had a dead output (no rollback).\n")
    if validation:
        parts.append("Scores on the held-out training images, each method predicting them as it predicts the "
                     "test images (decoded features from stage 1's decoders, which never saw them; the voxel methods "
                     "from their averaged trials). Settings chosen here score here too: the generator's tick and "
                     "pixel ridge's contrast.\n")
        parts.append(markdown_table(recon_rows(validation), recon_columns(validation)))
    if (results / "training.png").is_file():
        parts.append("![training curves](training.png)\n")
    return parts
