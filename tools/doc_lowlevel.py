"""The lowlevel comparison's blocks for ``tools/make_docs.py`` (``docs/lowlevel.md``): per set, ``wgan_gp`` against
pixel ridge and nearest_train beyond seed noise and on the validation hold-out; the choice on validation."""

from __future__ import annotations

import numpy as np

from tools.doc_sources import md_table as _table

PRESETS = ("small_strokes", "binary_shapes")


LOWLEVEL_SETS = ("demo", *PRESETS)
VERDICT_AGAINST = {"loss": "wgan_gp better", "win": "{other} better", "within noise": "within noise",
                   "single seed": "single seed"}  # a baseline's stats.csv row against wgan_gp, in wgan_gp's terms


def _lowlevel(ctx, where: str) -> tuple[list[dict], list[dict]]:
    """``table.csv`` and ``stats.csv`` rows of the lowlevel comparison on ``where``, the first subject and ROI."""
    folder = f"compare/lowlevel_{where}"
    ctx.used.add(f"{folder}/table.md")
    table = [r for r in ctx.rows(f"{folder}/table.csv") if r["subject"] == "sub-01"]
    roi = table[0]["roi"]
    stats = [r for r in ctx.rows(f"{folder}/stats.csv") if r["subject"] == "sub-01" and r["roi"] == roi]
    return [r for r in table if r["roi"] == roi], stats


def lowlevel_against(ctx, where: str, variant: str, other: str, metric: str, part: str):
    """``wgan_gp`` minus ``other`` (a baseline of the same variant) of the lowlevel comparison on ``where``:
    ``diff`` (sign turned: wgan_gp's side), ``seed_sd`` or ``verdict``; ``val``: the same difference of the
    validation means (``val_<metric>`` of table.csv)."""
    table, stats = _lowlevel(ctx, where)
    if part == "val":
        mean = {r["method"]: float(r[f"val_{metric}"]) for r in table
                if r["variant"] == variant and r["method"] in ("wgan_gp", other)}
        return mean["wgan_gp"] - mean[other]
    row = next(r for r in stats if r["variant"] == variant and r["method"] == other)
    if part == "verdict":
        return VERDICT_AGAINST[row[f"{metric}_verdict"]].format(other=other.replace("_", " "))
    value = float(row[f"{metric}_{part}"])
    return value if part == "seed_sd" else -value


def top1_column(table: list[dict]) -> str:
    """The top-1 identification column by the judge's conv5 among all test images (``nway<N>_alexnet5``; the pixel
    column ``nway<n>_id_pixel`` ends otherwise)."""
    return next(k for k in table[0] if k.startswith("nway") and k.endswith("_alexnet5"))


def lowlevel(ctx, where: str) -> str:
    """The lowlevel comparison on one set: per variant, ``wgan_gp``'s test PixCorr / SSIM (mean over seeds ± their SD),
    its difference from pixel ridge (PixCorr, SSIM, top-1 identification) and from nearest_train (SSIM) with the
    verdict beyond seed noise, and the same differences from pixel ridge on the validation hold-out."""
    table, _ = _lowlevel(ctx, where)
    top1 = top1_column(table)
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in table):
        g = next(r for r in table if r["variant"] == variant and r["method"] == "wgan_gp")
        cells = [f"{float(g['pixcorr']):.3f} ±{float(g['pixcorr_seed_sd']):.3f} / "
                 f"{float(g['ssim']):.3f} ±{float(g['ssim_seed_sd']):.3f}"]
        for other, metric in (("pixel_ridge", "pixcorr"), ("pixel_ridge", "ssim"), ("pixel_ridge", top1),
                              ("nearest_train", "ssim")):
            d = lowlevel_against(ctx, where, variant, other, metric, "diff")
            cells.append(f"{d:+.3f}: {lowlevel_against(ctx, where, variant, other, metric, 'verdict')}")
        cells.append(" / ".join(f"{lowlevel_against(ctx, where, variant, 'pixel_ridge', m, 'val'):+.3f}"
                                for m in ("pixcorr", "ssim")))
        rows.append([variant, *cells])
    n = table[0]["n_seeds"]
    return _table(["variant", f"wgan_gp PixCorr / SSIM ({n} seeds)", "PixCorr − pixel ridge", "SSIM − pixel ridge",
                   f"top-1 ({top1}) − pixel ridge", "SSIM − nearest_train",
                   "validation: PixCorr / SSIM − pixel ridge"], rows)


def _lowlevel_sets(ctx) -> list[str]:
    """The sets whose lowlevel comparison is committed, in ``LOWLEVEL_SETS`` order."""
    return [w for w in LOWLEVEL_SETS if (ctx.sources.root / f"compare/lowlevel_{w}/table.csv").is_file()]


def _lowlevel_validation(ctx) -> dict[str, dict[str, list[float]]]:
    """Per variant and set: the generator's (PixCorr + SSIM) / 2 on the validation hold-out, one value per seed
    (``validation.csv``, the first subject and ROI), in seed order."""
    out: dict[str, dict[str, list[float]]] = {}
    for w in _lowlevel_sets(ctx):
        roi = _lowlevel(ctx, w)[0][0]["roi"]
        rows = [r for r in ctx.rows(f"compare/lowlevel_{w}/validation.csv")
                if r["method"] == "wgan_gp" and r["subject"] == "sub-01" and r["roi"] == roi]
        for r in sorted(rows, key=lambda r: int(r["seed"] or 0)):
            out.setdefault(r["variant"], {}).setdefault(w, []).append((float(r["pixcorr"]) + float(r["ssim"])) / 2)
    return out


def _per_seed(by_set: dict[str, list[float]]) -> list[float]:
    """Each seed's mean over the sets (seed i of every set)."""
    n = min(len(v) for v in by_set.values())
    return [sum(v[i] for v in by_set.values()) / len(by_set) for i in range(n)]


def lowlevel_margin_stats(ctx) -> dict:
    """``pixels16 start`` against ``features`` on the hold-out, seed by seed (each seed's mean over the sets):
    ``seed_stats.seed_paired``'s ``{"diff", "seed_sd", "n_seeds", "verdict"}``."""
    from stage2_generate.compare.seed_stats import seed_paired

    scores = _lowlevel_validation(ctx)
    return seed_paired(_per_seed(scores["pixels16 start"]), _per_seed(scores["features"]))


def lowlevel_choice(ctx) -> str:
    """The lowlevel choice on validation: the generator's (PixCorr + SSIM) / 2 on the hold-out per set (mean over
    seeds ± their SD), the mean over the sets, and the difference from ``features`` seed by seed."""
    from stage2_generate.compare.seed_stats import seed_paired

    scores, sets = _lowlevel_validation(ctx), _lowlevel_sets(ctx)
    ref = _per_seed(scores["features"])
    rows = []
    for v, by in scores.items():
        cells = [f"{np.mean(by[w]):.3f} ±{np.std(by[w], ddof=1):.3f}" for w in sets]
        mine = _per_seed(by)
        d = seed_paired(mine, ref)
        rows.append([v, *cells, f"{np.mean(mine):.3f}",
                     "" if v == "features" else f"{d['diff']:+.3f} ±{d['seed_sd']:.3f}: {d['verdict']}"])
    return _table(["variant", *(f"{w} (first ROI)" if w == "demo" else w for w in sets), "mean",
                   "mean − features (seed by seed)"], rows)


LOWLEVEL_BUILDERS = {**{f"lowlevel-{w}": (lambda ctx, w=w: lowlevel(ctx, w)) for w in LOWLEVEL_SETS},
                     "lowlevel-choice": lowlevel_choice}


def lowlevel_margin(ctx) -> float:
    """``pixels16 start``'s validation score minus ``features``', averaged over the committed sets and seeds."""
    return lowlevel_margin_stats(ctx)["diff"]


def lowlevel_margin_sd(ctx) -> float:
    """The between-seed SD of that margin."""
    return lowlevel_margin_stats(ctx)["seed_sd"]


LOWLEVEL_DERIVED = {"lowlevel_margin": lowlevel_margin, "lowlevel_margin_sd": lowlevel_margin_sd}
