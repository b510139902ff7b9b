"""The tables ``tools/make_docs.py`` writes into README.md and docs/*.md, one builder per block name.

A builder takes a ``make_docs.Context`` (``ctx.get("FILE:SELECTOR")`` reads a value, ``ctx.table("FILE")`` the first
Markdown table of a file as rows of strings; both remember the files read, for the stale check) and returns the
block's Markdown. No bold: a single run cannot say which difference holds beyond the spread between seeds.
``config-reference`` (``tools/doc_config.py``) reads no outputs: docs/config.md's tables of the config schema.
"""

from __future__ import annotations

from shared.report import ROW_VALUES  # a method's settings, not metric columns
from tools.doc_ablations import ABLATION_BUILDERS
from tools.doc_blend import BLEND_BUILDERS, BLEND_DERIVED
from tools.doc_config import CONFIG_BUILDERS
from tools.doc_lowlevel import LOWLEVEL_BUILDERS, LOWLEVEL_DERIVED
from tools.doc_sources import _parse_table, md_table as _table

PRESETS = ("small_strokes", "binary_shapes")


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table_of(ctx, rel: str) -> list[dict]:
    ctx.used.add(rel)
    return _parse_table((ctx.sources.root / rel).read_text())


def _first_roi(ctx, run: str) -> str:
    return next(iter(ctx.get(f"{run}/metrics.json:data.sub-01")))


def demo_decoding(ctx) -> str:
    """The demo's VC decoding per layer: test scores, out-of-fold scores, the chosen penalty, units."""
    base = "demo/metrics.json:decoding.sub-01.VC"
    rows = []
    for layer in ctx.get("demo/metrics.json:info.layers"):
        d = f"{base}.{layer}"
        oof = " / ".join(ctx.fmt(f"{d}.train_oof.{k}") for k in ("profile_corr", "pattern_corr", "pairwise_id"))
        rows.append([layer, *(ctx.fmt(f"{d}.{k}") for k in ("profile_corr", "pattern_corr", "pairwise_id")), oof,
                     ctx.fmt(f"{d}.alpha", ".0f"), ctx.fmt(f"{d}.n_units")])
    return _table(["layer", "profile_corr", "pattern_corr", "pairwise_id", "out-of-fold profile / pattern / pairwise",
                   "alpha (CV)", "units"], rows)


def demo_reconstruction(ctx) -> str:
    """Every method of the demo on the natural test images, one row per method and ROI."""
    recon = ctx.get("demo/metrics.json:reconstruction.sub-01")
    first = next(iter(recon.values()))
    columns = [k for k, v in first.items() if isinstance(v, (int, float)) and k not in ROW_VALUES]
    rows = []
    for key, scores in recon.items():
        method, _, roi = key.partition("[")
        rows.append([method, roi.rstrip("]") or _first_roi(ctx, "demo"), *(f"{scores[c]:.3f}" for c in columns)])
    order = {roi: i for i, roi in enumerate(ctx.get("demo/metrics.json:data.sub-01"))}
    rows.sort(key=lambda r: order.get(r[1], 99))  # stable: the methods keep their order within an ROI
    return _table(["method", "ROI", *columns], rows)


def _pair(ctx, run: str, method: str, section: str = "reconstruction") -> str:
    key = f"{run}/metrics.json:{section}.sub-01.{method}"
    return f"{ctx.fmt(key + '.pixcorr')} / {ctx.fmt(key + '.ssim')}"


def _tick(ctx, run: str) -> str:
    g = f"{run}/metrics.json:reconstruction_info.generator"
    return f"{ctx.fmt(g + '.best_step')} of {ctx.fmt(g + '.iterations')}"


def _rollbacks(ctx, run: str) -> str:
    n = len(ctx.get(f"{run}/metrics.json:reconstruction_info.generator.rollbacks"))
    return str(n) if n else "none"


def _set_label(ctx, run: str) -> str:
    data = f"{run}/metrics.json:data.sub-01.{_first_roi(ctx, run)}"
    trials, images = ctx.get(f"{data}.n_train_trials"), ctx.get(f"{data}.n_train_images")
    train = f"{trials} single trials" if trials == images else f"{trials} trials of {images} images"
    return (f"{run} ({ctx.fmt(f'{run}/metrics.json:reconstruction_info.score_size.pixels')} px, {train}, "
            f"{ctx.fmt(f'{data}.n_voxels', ',d')} voxels)")


def small_data(ctx) -> str:
    """The README's stress presets: the generator and the baselines on the test images, PixCorr / SSIM."""
    rows = [[_set_label(ctx, run), *(_pair(ctx, run, m) for m in ("wgan_gp", "pixel_ridge", "nearest_train")),
             _tick(ctx, run), _rollbacks(ctx, run)] for run in PRESETS]
    return _table(["set", "wgan_gp PixCorr / SSIM", "pixel_ridge", "nearest_train", "reconstructing tick",
                   "rollbacks"], rows)


def presets_results(ctx) -> str:
    """The demo's first ROI and both presets: test (validation) PixCorr / SSIM of every method."""
    rows = []
    for run in ("demo", *PRESETS):
        cells = [f"{_pair(ctx, run, m)} ({_pair(ctx, run, m, 'reconstruction_validation')})"
                 for m in ("wgan_gp", "pixel_ridge", "nearest_train")]
        label = f"{run} ({_first_roi(ctx, run)})" if run == "demo" else run
        rows.append([label, *cells, _pair(ctx, run, "wgan_gp_true_features"), _tick(ctx, run), _rollbacks(ctx, run)])
    return _table(["set", "wgan_gp", "pixel_ridge", "nearest_train", "true-feature input", "tick that reconstructs",
                   "rollbacks"], rows)


def _settings_scores(ctx) -> dict[tuple[str, str], tuple[float, float]]:
    """{(learning rate, set): (PixCorr, SSIM)} of the generator's first ROI on the hold-out, means over the seeds."""
    scores = {}
    for s in ("demo", *PRESETS):
        rows = [r for r in ctx.rows(f"compare/settings_{s}/table.csv") if r["method"] == "wgan_gp"]
        for lr in SETTINGS_RATES:
            row = next(r for r in rows if r["variant"] == f"lr {lr}" and (r["subject"], r["roi"]) == (
                rows[0]["subject"], rows[0]["roi"]))
            scores[lr, s] = float(row["val_pixcorr"]), float(row["val_ssim"])
    return scores


def _settings_means(scores: dict[tuple[str, str], tuple[float, float]]) -> dict[str, float]:
    """Each learning rate's (PixCorr + SSIM) / 2 on the hold-out (``_settings_scores``), averaged over the three
    sets (unrounded)."""
    sets = ("demo", *PRESETS)
    return {lr: sum(sum(scores[lr, s]) / 2 for s in sets) / len(sets) for lr in SETTINGS_RATES}


def settings_choice(ctx) -> str:
    """The learning rate chosen on validation: (PixCorr + SSIM) / 2 of the generator's first ROI per set (means over
    the seeds) and its mean over the sets (from the unrounded values); then, per set, 3e-4 minus 1e-3 on the hold-out
    with ``stats.csv``'s verdict (beyond the spread between seeds or not)."""
    sets, scores = ("demo", *PRESETS), _settings_scores(ctx)
    means = _settings_means(scores)
    rows = [[lr, *(f"{scores[lr, s][0]:.3f} / {scores[lr, s][1]:.3f} → {sum(scores[lr, s]) / 2:.3f}" for s in sets),
             f"{means[lr]:.3f}"] for lr in SETTINGS_RATES]
    verdicts = []
    for s in sets:
        vs = next(r for r in ctx.rows(f"compare/settings_{s}/stats.csv") if r["variant"] == "lr 3e-4"
                  and r["method"] == "wgan_gp")  # the first row: the generator's first ROI
        words = [_VAL_VERDICT.get(vs[f"val_{m}_verdict"], vs[f"val_{m}_verdict"]) for m in ("pixcorr", "ssim")]
        verdicts.append(" / ".join(f"{float(vs[f'val_{m}_diff']):+.3f}: {w}" for m, w in zip(("pixcorr", "ssim"), words)))
    rows.append(["3e-4 − 1e-3: verdict", *verdicts, ""])
    return _table(["learning rate", "demo (VC)", *PRESETS, "mean"], rows)


SETTINGS_RATES = ("1e-3", "3e-4")  # the variants of configs/ablations/settings.yaml, as `lr <rate>`
_VAL_VERDICT = {"win": "3e-4 better", "loss": "1e-3 better"}  # stats.csv's verdicts of lr 3e-4 against lr 1e-3


def bench_ridge(ctx) -> str:
    """The decoder benchmark's table as ``make bench`` printed it (``bench/ridge.txt``)."""
    rows = _table_of(ctx, "bench/ridge.txt")
    header = list(rows[0])
    align = [" ---: " if all(_numeric(r[h]) for r in rows) else " --- " for h in header]
    return "\n".join([_row(header), "|" + "|".join(align) + "|", *(_row(r.values()) for r in rows)]) + "\n"


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace(",", "").split(" ")[0].isdigit()


def bench_stage2(ctx) -> str:
    """Stage 2's speed and memory per image size (``demo/bench_stage2.json``)."""
    rows = []
    for i in range(len(ctx.rows("demo/bench_stage2.json"))):
        r = f"demo/bench_stage2.json:[{i}]"
        rows.append([ctx.get(f"{r}.device"), ctx.get(f"{r}.image_size"), ctx.fmt(f"{r}.critic_steps_per_s", ".2f"),
                     ctx.fmt(f"{r}.generator_steps_per_s", ".2f"), ctx.fmt(f"{r}.train_iterations_per_s"),
                     ctx.fmt(f"{r}.train_images_per_s", ".1f"), ctx.fmt(f"{r}.generate_images_per_s", ".0f"),
                     ctx.fmt(f"{r}.peak_memory_mb", ",.0f")])
    return _table(["device", "image px", "critic steps/s", "generator steps/s", "training iterations/s",
                   "training images/s", "generated images/s", "peak RSS MB"], rows, " ---: ")


def simulator(ctx) -> str:
    """Pixel ridge on the demo's simulated experiment at three luminance / colour shares (``bench/simulator.txt``)."""
    text = ctx.get("bench/simulator.txt:/([\\s\\S]*)/")
    rows = []
    for i, line in enumerate(line for line in text.splitlines()[1:] if line.strip()):
        lum, col, rel, pid, pc, size, gain = line.split()
        label = " (default)" if i == 0 else " (contrast energy only)" if float(lum) == float(col) == 0 else ""
        rows.append([f"{lum} / {col}{label}", rel, pid, pc, f"{size} px, {gain}"])
    return _table(["luminance / colour share", "VC reliability (median)", "pixel ridge: pairwise_id_pixel",
                   "pixel ridge: PixCorr", "chosen size, contrast gain (1 = as fitted)"], rows)


def compare_jobs(ctx) -> str:
    """The `layers` comparison's wall time with ``--jobs 1`` and ``--jobs 2`` (``bench/compare_jobs.txt``)."""
    t = "bench/compare_jobs.txt:"
    one, two = ctx.get(t + "/--jobs 1: (\\d+) s/"), ctx.get(t + "/--jobs 2: (\\d+) s/")
    ratio = ctx.fmt(t + "/takes x([\\d.]+) the time/", ".2f")
    cmd = "`compare --config configs/ablations/layers.yaml --jobs {}`"
    return _table(["run", "wall time"], [[cmd.format(1), f"{one} s"], [cmd.format(2), f"{two} s (x{ratio})"]],
                  " ---: ")


def _oof_gaps(ctx) -> list[float]:
    """VC's test minus out-of-fold profile correlation, per layer of the demo."""
    d = "demo/metrics.json:decoding.sub-01.VC"
    return [ctx.get(f"{d}.{layer}.profile_corr") - ctx.get(f"{d}.{layer}.train_oof.profile_corr")
            for layer in ctx.get("demo/metrics.json:info.layers")]


def _unit_gains(ctx) -> list[float]:
    """VC's out-of-fold profile correlation with a penalty per unit minus with one per layer, per layer."""
    return [ctx.get(f"demo_unit/decoding.csv:[roi=VC,layer={layer}].oof_profile_corr")
            - ctx.get(f"demo/metrics.json:decoding.sub-01.VC.{layer}.train_oof.profile_corr")
            for layer in ctx.get("demo/metrics.json:info.layers")]


def _fit(ctx, method: str, key: str):
    """``key`` of ``method``'s fit in the decoder benchmark (``fixed_s``, ``ms_per_unit``, ``layer_shown_s``,
    ``x_fastl2lir_per_unit`` ...: ``bench/bench_ridge.py`` fits them to its unit counts, ``bench/unit_costs.py``)."""
    return ctx.get(f"bench/ridge.json:fits.{method}.{key}")


def _preset_profiles(ctx) -> list[float]:
    return [m["profile_corr"] for run in PRESETS for by_roi in ctx.get(f"{run}:decoding").values()
            for by_layer in by_roi.values() for m in by_layer.values()]


def _settings_mean_gap(ctx) -> float:
    """The mean over the sets of lr 1e-3's hold-out score minus lr 3e-4's (``_settings_means``)."""
    means = _settings_means(_settings_scores(ctx))
    return means["1e-3"] - means["3e-4"]


# values a marker names as ``@name``: what would take a row of references to spell out
def _validation_orders(ctx) -> list[bool]:
    """Per ROI and metric (PixCorr, SSIM) of the demo: does the hold-out order ``wgan_gp`` and pixel ridge as the
    test images do?"""
    same = []
    for roi in ctx.get("demo/metrics.json:data.sub-01"):
        suffix = "" if roi == _first_roi(ctx, "demo") else f"[{roi}]"
        for metric in ("pixcorr", "ssim"):
            d = [ctx.get(f"demo/metrics.json:{sec}.sub-01.wgan_gp{suffix}.{metric}")
                 - ctx.get(f"demo/metrics.json:{sec}.sub-01.pixel_ridge{suffix}.{metric}")
                 for sec in ("reconstruction_validation", "reconstruction")]
            same.append((d[0] > 0) == (d[1] > 0))
    return same


def _validation_misorders_beyond_noise(ctx) -> int:
    """Cells where the hold-out orders the two unlike the test images and the headline's seeds call the test
    difference more than noise."""
    cells = [(roi, m) for roi in ctx.get("demo/metrics.json:data.sub-01") for m in ("pixcorr", "ssim")]
    return sum(not same and headline_metric(ctx, roi, m, "verdict") != "within noise"
               for (roi, m), same in zip(cells, _validation_orders(ctx)))


def validation_ranking(ctx) -> str:
    """The demo per ROI: ``wgan_gp`` minus pixel ridge in PixCorr and SSIM on the validation hold-out and on the
    test images, and whether the hold-out orders the two as the test set does."""
    rows = []
    for roi in ctx.get("demo/metrics.json:data.sub-01"):
        suffix = "" if roi == _first_roi(ctx, "demo") else f"[{roi}]"
        cells = []
        for metric in ("pixcorr", "ssim"):
            diffs = []
            for section in ("reconstruction_validation", "reconstruction"):
                sec = f"demo/metrics.json:{section}.sub-01"
                diffs.append(ctx.get(f"{sec}.wgan_gp{suffix}.{metric}") - ctx.get(f"{sec}.pixel_ridge{suffix}.{metric}"))
            same = "same order" if (diffs[0] > 0) == (diffs[1] > 0) else "opposite order"
            cells.append(f"{diffs[0]:+.3f} / {diffs[1]:+.3f}: {same}")
        rows.append([roi, *cells])
    return _table(["ROI", "PixCorr: validation / test", "SSIM: validation / test"], rows)


HEADLINE = "compare/headline/stats.csv"
VERDICT_FOR_METHOD = {"loss": "wgan_gp better", "win": "pixel ridge better", "within noise": "within noise",
                      "single seed": "single seed"}  # stats.csv's rows are the baseline against wgan_gp


def _headline_rows(ctx, baseline: str = "pixel_ridge") -> dict[str, dict]:
    """``stats.csv`` rows of ``baseline`` against ``wgan_gp`` in the headline comparison, by ROI."""
    ctx.used.add(HEADLINE.replace(".csv", ".md"))
    return {r["roi"]: r for r in ctx.rows(HEADLINE) if r["method"] == baseline and r["subject"] == "sub-01"}


def headline_metric(ctx, roi: str, metric: str, part: str):
    """``wgan_gp`` minus pixel ridge of the headline comparison: ``diff``, ``lo``, ``hi`` (signs turned), ``seed_sd``
    or ``verdict`` (in ``wgan_gp``'s terms)."""
    row = _headline_rows(ctx)[roi]
    if part == "verdict":
        return VERDICT_FOR_METHOD[row[f"{metric}_verdict"]]
    value = float(row[f"{metric}_{ {'lo': 'hi', 'hi': 'lo'}.get(part, part)}"])
    return value if part == "seed_sd" else -value


def _test_metrics(row: dict) -> list[str]:
    """The test images' metrics of a ``stats.csv`` row (its ``val_*`` columns are the hold-out's, without intervals)."""
    return [k[:-len("_diff")] for k in row if k.endswith("_diff") and not k.startswith("val_")]


def headline_seeds(ctx) -> str:
    """The demo with three generator seeds: per metric and ROI, ``wgan_gp`` minus pixel ridge (mean over seeds and
    test images) [95% interval over seeds and images], the between-seed SD of that difference, and the verdict."""
    by_roi = _headline_rows(ctx)
    rois = list(by_roi)
    first = by_roi[rois[0]]
    metrics = _test_metrics(first)
    rows = []
    for m in metrics:
        cells = []
        for roi in rois:
            d, lo, hi = (headline_metric(ctx, roi, m, p) for p in ("diff", "lo", "hi"))
            sd = headline_metric(ctx, roi, m, "seed_sd")
            cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] ±{sd:.3f}: {headline_metric(ctx, roi, m, 'verdict')}")
        rows.append([m + (" (lower is better)" if m == "rmse" else ""), *cells])
    seeds = first["n_seeds"]
    return _table(["metric", *(f"{roi} ({seeds} seeds, {first['n_images']} images)" for roi in rois)], rows)


def headline_reading(ctx) -> str:
    """The headline table read per ROI: the columns where either side is better beyond noise, and how many are
    within noise."""
    by_roi = _headline_rows(ctx)
    metrics = _test_metrics(next(iter(by_roi.values())))
    lines = []
    for roi in by_roi:
        verdicts = {m: headline_metric(ctx, roi, m, "verdict") for m in metrics}
        if "single seed" in verdicts.values():
            lines.append(f"- from {roi}: one seed ran, so no difference is called more than noise.")
            continue
        sides = []
        for side in ("wgan_gp better", "pixel ridge better"):
            names = [f"{m} ({headline_metric(ctx, roi, m, 'diff'):+.3f}{', lower is better' if m == 'rmse' else ''})"
                     for m, v in verdicts.items() if v == side]
            sides.append(f"{side.replace(' better', '')} better on {', '.join(names) if names else 'none'}")
        within = sum(v == "within noise" for v in verdicts.values())
        lines.append(f"- from {roi}: {sides[0]}; {sides[1]}; within noise on the other {within} of {len(metrics)}.")
    return "\n".join(lines) + "\n"


DERIVED = {"demo_oof_gap_min": lambda ctx: min(_oof_gaps(ctx)), "demo_oof_gap_max": lambda ctx: max(_oof_gaps(ctx)),
           "demo_unit_gain_max": lambda ctx: max(_unit_gains(ctx)),
           "validation_same_order": lambda ctx: sum(_validation_orders(ctx)),
           "validation_cells": lambda ctx: len(_validation_orders(ctx)),
           "validation_misorders_beyond_noise": _validation_misorders_beyond_noise,
           "preset_profile_min": lambda ctx: min(_preset_profiles(ctx)),
           "preset_profile_max": lambda ctx: max(_preset_profiles(ctx)),
           "settings_mean_gap": _settings_mean_gap,
           **LOWLEVEL_DERIVED, **BLEND_DERIVED,
           # the decoder benchmark's fits the docs quote, as @<method>_<key>
           **{f"{m}_{name}": (lambda ctx, m=m, k=k: _fit(ctx, m, k)) for m, name, k in (
               ("himalaya", "layer_s", "layer_shown_s"), ("dense_unit", "layer_s", "layer_shown_s"),
               ("sparse", "per_unit_ratio", "x_fastl2lir_per_unit"), ("sparse", "ms_per_unit", "ms_per_unit"),
               ("fastl2lir", "ms_per_unit", "ms_per_unit"), ("sparse", "fixed_s", "fixed_s"),
               ("fastl2lir", "fixed_s", "fixed_s"), ("fastl2lir", "layer_s", "layer_shown_s"),
               ("dense", "layer_s", "layer_shown_s"))}}

BUILDERS = {"demo-decoding": demo_decoding, "demo-reconstruction": demo_reconstruction, "small-data": small_data,
            "presets-results": presets_results, "settings-choice": settings_choice, "bench-ridge": bench_ridge,
            "bench-stage2": bench_stage2, "headline-seeds": headline_seeds, "headline-reading": headline_reading,
           
            **LOWLEVEL_BUILDERS, **BLEND_BUILDERS, **CONFIG_BUILDERS, **ABLATION_BUILDERS,
            "validation-ranking": validation_ranking, "simulator": simulator, "compare-jobs": compare_jobs}
