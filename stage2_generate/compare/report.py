"""The rows of a comparison and what is written from them: per-image values of every variant's
method and the baselines (``collect``), their means with bootstrap intervals, paired statistics
against the reference variant, ``table.md``/``table.csv``, ``stats.md``, the bar plot and the grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import stats
from shared.config import BASELINES, GENERATOR_ROWS
from shared.errors import UserError
from shared.evaluation import LOWER_IS_BETTER, VALIDATION_SHOWN, metric_order
from shared.report import csv_table, markdown_table, metric_legend
from shared.runs import atomic_write_text
from stage2_generate.compare.runner import read_per_image, read_validation
from stage2_generate.compare.spec import CompareSpec
from stage2_generate.methods import REGISTRY
from stage2_generate.recon_files import split_method_key

FROM_VOXELS = tuple(b for b in BASELINES if REGISTRY[b].reads == "voxels")  # pixel ridge: the grid's bottom row


# ---------------------------------------------------------------------- collecting


def collect(spec: CompareSpec, records: list[dict]) -> list[dict]:
    """Per-image values of every row: variant's method (and, for the generator, its true-feature row), then
    baselines (a baseline identical in several variants is listed once)."""
    references = GENERATOR_ROWS[1:] if spec.method == GENERATOR_ROWS[0] else []  # the true-feature row
    rows: list[dict] = []
    baselines: list[dict] = []
    for v, rec in zip(spec.variants, records):
        split = next(iter(v.cfg.data.test))
        per = read_per_image(Path(rec["results"]))[split]
        validation = read_validation(Path(rec["results"]))
        first_roi = v.cfg.data.rois[0]
        for subject, by_method in per.items():
            for key, values in by_method.items():
                method, roi = split_method_key(key, first_roi)
                metrics = {k: np.asarray(x, dtype=np.float64) for k, x in values.items() if k != "names"}
                row = {"variant": v.name, "subject": subject, "roi": roi, "method": method, "split": split,
                       "names": list(values["names"]), "values": metrics, "results": rec["results"],
                       "validation": validation.get(subject, {}).get(key, {})}
                if method in (spec.method, *references, *spec.also):
                    rows.append(row)
                elif method in BASELINES:
                    same = next((b for b in baselines if b["method"] == method and b["subject"] == subject
                                 and b["roi"] == roi and b["names"] == row["names"]
                                 and all(np.array_equal(b["values"][k], metrics[k], equal_nan=True)
                                         for k in metrics)), None)
                    if same is None:
                        baselines.append({**row, "variants": [v.name]})
                    else:
                        same["variants"].append(v.name)
    n_variants = len(spec.variants)
    for b in baselines:
        b["variant"] = "all variants" if len(b["variants"]) == n_variants else ", ".join(b["variants"])
    return rows + baselines


def metric_names(rows: list[dict]) -> list[str]:
    return metric_order(k for r in rows for k in r["values"])


def summarise_rows(rows: list[dict], seed: int) -> None:
    for r in rows:
        r["summary"] = {m: stats.mean_ci(v, seed=seed) for m, v in r["values"].items()}


def paired_rows(spec: CompareSpec, rows: list[dict], seed: int) -> list[dict]:
    """Each variant's method against the reference's (with the same matrix values), per subject and ROI,
    over their shared images; a variant on an ROI the reference lacks is paired with its first ROI."""
    ref: dict[tuple, dict] = {}
    first: dict[tuple, dict] = {}
    for r in rows:
        if r["method"] == spec.method:
            ref[(r["variant"], r["subject"], r["roi"])] = r
            first.setdefault((r["variant"], r["subject"]), r)
    out = []
    for r in rows:
        if r["method"] != spec.method:
            continue
        refv = spec.reference_for(spec.variant(r["variant"]))
        if refv is None or refv.name == r["variant"]:
            continue
        base = ref.get((refv.name, r["subject"], r["roi"])) or first.get((refv.name, r["subject"]))
        if base is None:
            continue
        out.append(_paired_entry(r, base, f"{refv.name} ({base['roi']})", seed))
    for r in rows:  # the other methods against `method` of the same variant, subject and ROI
        base = ref.get((r["variant"], r["subject"], r["roi"]))
        if r["method"] not in spec.also or base is None:
            continue
        out.append(_paired_entry(r, base, f"{spec.method} (same variant)", seed))
    return out


def _paired_entry(r: dict, base: dict, vs: str, seed: int) -> dict:
    base_index = {n: i for i, n in enumerate(base["names"])}
    ia = [i for i, n in enumerate(r["names"]) if n in base_index]
    ib = [base_index[r["names"][i]] for i in ia]
    entry = {"variant": r["variant"], "method": r["method"], "subject": r["subject"], "roi": r["roi"], "vs": vs,
             "n_images": len(ia)}
    for m in r["values"]:
        if m in base["values"]:
            entry[m] = stats.paired(r["values"][m][ia], base["values"][m][ib], seed=seed)
    return entry


# ------------------------------------------------------------------------ writing


def _cell(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def write_tables(out: Path, spec: CompareSpec, rows: list[dict], paired: list[dict]) -> None:
    metrics = metric_names(rows)
    keys = ["variant", "subject", "roi", "method"]
    val_cols = [f"val_{m}" for m in VALIDATION_SHOWN if any(m in r.get("validation", {}) for r in rows)]
    md_rows = [{**{k: r[k] for k in keys}, **{m: _cell(r["summary"][m]) for m in metrics if m in r["summary"]},
                **{c: r["validation"][c[4:]] for c in val_cols if c[4:] in r.get("validation", {})}} for r in rows]
    n_images = sorted({r["summary"][metrics[0]]["n"] for r in rows}) if rows else []
    ref_cfg = spec.variant(spec.reference).cfg
    judge = ref_cfg.eval
    from shared.weights import parse_weights

    head = (f"# Compare `{spec.name}` ({spec.path})\n\nBase config `{spec.base}`; feature network "
            f"{ref_cfg.features.network} [{parse_weights(ref_cfg.features.weights).label}]; judge "
            f"{judge.judge_network} [{parse_weights(judge.judge_weights).label}] {', '.join(judge.judge_layers)} at "
            f"{judge.judge_input_size} px; test set "
            f"`{rows[0]['split'] if rows else '?'}`, {', '.join(map(str, n_images))} test images. Each cell: mean over "
            f"test images [95% percentile bootstrap interval, {stats.N_RESAMPLES} resamples of the images]. "
            f"`{spec.method}_true_features`: the same generator fed the true features (true-feature input: a reference, "
            f"not a bound; a method from decoded features can beat it). Baselines "
            f"(`pixel_ridge`, `nearest_train`) are listed once per distinct result.\n\n")
    if val_cols:
        head += (f"`{'`, `'.join(val_cols)}`: the same method's mean on the validation hold-out of the training "
                 f"images (never trained on; settings are chosen there, not on the test images).\n\n")
    atomic_write_text(out / "table.md", head + markdown_table(md_rows, keys + metrics + val_cols) + "\n"
                      + metric_legend(metrics))
    csv_cols = keys + [f"{m}{sfx}" for m in metrics for sfx in ("", "_lo", "_hi")] + ["n_images"] + val_cols
    csv_rows = [{**{k: r[k] for k in keys},
                 **{f"{m}{sfx}": r["summary"][m][part] for m in metrics if m in r["summary"]
                    for sfx, part in (("", "mean"), ("_lo", "lo"), ("_hi", "hi"))},
                 "n_images": r["summary"][metrics[0]]["n"],
                 **{c: r["validation"][c[4:]] for c in val_cols if c[4:] in r.get("validation", {})}} for r in rows]
    atomic_write_text(out / "table.csv", csv_table(csv_rows, csv_cols))
    also = (f" Rows of {', '.join(f'`{a}`' for a in spec.also)}: that method against `{spec.method}` of the same "
            f"variant." if spec.also else "")
    lines = [f"# Compare `{spec.name}`: each variant against `{spec.reference}`\n",
             f"Method `{spec.method}`, paired over the same test images: mean difference (variant minus reference) "
             f"[95% bootstrap interval], and the two-sided Wilcoxon signed-rank p-value (scipy), which rests on the "
             f"k images whose difference is not zero (identification scores near 1 tie on most images). Positive is "
             f"better for every metric but `rmse` (lower is better). No correction for multiple comparisons.{also}\n"]
    if paired:
        md = [{"variant": e["variant"], "method": e["method"], "subject": e["subject"], "roi": e["roi"], "vs": e["vs"],
               "n": e["n_images"],
               **{m: f"{e[m]['diff']:+.3f} [{e[m]['lo']:+.3f}, {e[m]['hi']:+.3f}] p={_p(e[m]['p'])} k={e[m]['n_nonzero']}"
                  for m in metrics if m in e}} for e in paired]
        lines.append(markdown_table(md, ["variant", "method", "subject", "roi", "vs", "n"] + [m for m in metrics]))
    else:
        lines.append("(only the reference variant ran)\n")
    atomic_write_text(out / "stats.md", "\n".join(lines))


def shown_rows(spec: CompareSpec, rows: list[dict], baselines: tuple[str, ...]) -> list[dict]:
    """What the figures show: each variant's method on its first ROI (first subject), then the reference
    variant's ``baselines`` on its first ROI."""
    subject = spec.variant(spec.reference).cfg.data.subjects[0]
    first_roi = {v.name: v.cfg.data.rois[0] for v in spec.variants}
    shown = [r for r in rows if r["method"] in (spec.method, *spec.also) and r["subject"] == subject
             and r["roi"] == first_roi[r["variant"]]]
    return shown + [r for r in rows if r["method"] in baselines and r["subject"] == subject
                    and spec.reference in r.get("variants", []) and r["roi"] == first_roi[spec.reference]]


def _label(spec: CompareSpec, r: dict) -> str:
    """A figure's name of a method row: the variant's name, with the method's when it is not `method`
    (only the method's when there is one variant)."""
    if len(spec.variants) == 1 and spec.also:
        return r["method"]
    return r["variant"] if r["method"] == spec.method else f"{r['variant']}: {r['method']}"


def bars_plot(spec: CompareSpec, rows: list[dict], path: Path, title: str) -> None:
    """One panel per metric: each variant's method on its first ROI (first subject), then the reference
    variant's baselines, each mean with its bootstrap interval. The table has every row."""
    from shared.plotting import interval_bars

    subject = spec.variant(spec.reference).cfg.data.subjects[0]
    first_roi = {v.name: v.cfg.data.rois[0] for v in spec.variants}
    shown = shown_rows(spec, rows, BASELINES)
    labels = [_label(spec, r) + (f" ({r['roi']})" if r["roi"] != first_roi[spec.reference] else "")
              if r["method"] not in BASELINES else f"{r['method']} ({r['roi']})" for r in shown]
    kinds = ["baseline" if r["method"] in BASELINES else "method" for r in shown]
    nan = {"mean": np.nan, "lo": np.nan, "hi": np.nan}
    panels = {m + (" (lower is better)" if m in LOWER_IS_BETTER else ""):
              [tuple(r["summary"].get(m, nan)[k] for k in ("mean", "lo", "hi")) for r in shown]
              for m in metric_names(shown)}
    interval_bars(labels, kinds, panels, path, f"{title}; {spec.method} per variant ({subject}, "
                                                f"{first_roi[spec.reference]} unless named), baselines in grey")


def compare_grid(spec: CompareSpec, rows: list[dict], path: Path, columns: int) -> None:
    """True images on top, one row per variant (its first subject and ROI), the same test images in every
    row, and the reference variant's pixel-ridge baseline at the bottom; from the saved files alone."""
    from shared.plotting import image_grid
    from stage2_generate.recon_files import method_paths, read_reconstructions, read_stimuli, to_rgb

    ref_cfg = spec.variant(spec.reference).cfg
    subject, split = ref_cfg.data.subjects[0], next(iter(ref_cfg.data.test))
    shown = shown_rows(spec, rows, FROM_VOXELS)
    ref_results = Path(next(r["results"] for r in shown if r["variant"] == spec.reference))
    true, names = read_stimuli(ref_results, split)
    names = names[:columns]
    picked: dict[str, np.ndarray] = {}
    for r in shown:
        h5, _ = method_paths(Path(r["results"]) / "reconstructions" / subject / r["roi"] / split, r["method"])
        if not h5.is_file():
            raise UserError(f"{h5} is missing; rerun stage 2 of that variant (delete {r['results']}) and compare")
        images, rec_names = read_reconstructions(h5)
        index = {n: i for i, n in enumerate(rec_names)}
        label = _label(spec, r) if r["method"] not in BASELINES else f"{r['method']} (baseline)"
        if label == "true":  # a variant named like the stimulus row (e.g. train_inputs 'true')
            label = "variant true"
        picked[label] = to_rgb(images[[index[n] for n in names]])
    image_grid({"true": true[:columns], **picked}, path, title=f"compare {spec.name}: {subject}, {split} test "
                                                              f"images, {spec.method} per variant", columns=columns)
