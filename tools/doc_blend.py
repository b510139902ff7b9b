"""The blend comparison's block for ``tools/make_docs.py`` (``docs/lowlevel.md``): per set and ROI, ``wgan_gp_blend``
against pixel ridge, nearest_train and the generator alone, beyond seed noise and on the validation hold-out, with the
weights the hold-out chose."""

from __future__ import annotations

from tools.doc_lowlevel import top1_column
from tools.doc_sources import md_table as _table

BLEND_SETS = ("demo", "small_strokes", "binary_shapes")
BLEND = "wgan_gp_blend"
VERDICT = {"loss": "blend better", "win": "{other} better", "within noise": "within noise",
           "single seed": "single seed"}  # another row's stats.csv verdict against the blend, in the blend's terms


def _rows(ctx, where: str, name: str) -> list[dict]:
    """The rows of a blend comparison's file of its first subject."""
    rows = ctx.rows(f"compare/blend_{where}/{name}")
    return [r for r in rows if r["subject"] == rows[0]["subject"]]


def blend_against(ctx, where: str, roi: str, other: str, metric: str, part: str = "diff"):
    """``wgan_gp_blend`` minus ``other`` on ``where``'s ROI ``roi`` (stats.csv, sign turned to the blend's side):
    ``diff``, ``seed_sd``, ``verdict``, or ``val`` / ``val_verdict`` for the validation hold-out's seed-paired
    difference."""
    row = next(r for r in _rows(ctx, where, "stats.csv") if r["roi"] == roi and r["method"] == other)
    if part in ("verdict", "val_verdict"):
        key = f"{metric}_verdict" if part == "verdict" else f"val_{metric}_verdict"
        return VERDICT[row[key]].format(other=other.replace("_", " "))
    if part == "val":
        return -float(row[f"val_{metric}_diff"])
    value = float(row[f"{metric}_{part}"])
    return value if part == "seed_sd" else -value


def blend_choices(ctx, where: str, roi: str | None = None) -> list[tuple[float, str]]:
    """The weight ``a`` and the way (``whole`` / ``coarse``) the hold-out chose for each seed (choices.csv), in seed
    order, on ``roi`` (default: the comparison's first ROI)."""
    rows = [r for r in _rows(ctx, where, "choices.csv") if r["method"] == BLEND]
    roi = roi or rows[0]["roi"]
    return [(float(r["blend_weight"]), r["blend_mode"]) for r in sorted((r for r in rows if r["roi"] == roi),
                                                                       key=lambda r: int(r["seed"] or 0))]


def blend(ctx) -> str:
    """Every committed set's blend comparison, one row per ROI."""
    rows = []
    for where in BLEND_SETS:
        if not (ctx.sources.root / f"compare/blend_{where}/table.csv").is_file():
            continue
        ctx.used.add(f"compare/blend_{where}/table.md")
        table = _rows(ctx, where, "table.csv")
        top1 = top1_column(table)
        for roi in dict.fromkeys(r["roi"] for r in table):
            b = next(r for r in table if r["roi"] == roi and r["method"] == BLEND)

            def cell(other: str, metric: str, part: str = "verdict") -> str:
                diff = blend_against(ctx, where, roi, other, metric)
                return f"{diff:+.3f}: {blend_against(ctx, where, roi, other, metric, part)}"

            held = " / ".join(f"{blend_against(ctx, where, roi, 'pixel_ridge', m, 'val'):+.3f} "
                              f"({blend_against(ctx, where, roi, 'pixel_ridge', m, 'val_verdict')})"
                              for m in ("pixcorr", "ssim"))
            rows.append([f"{where} {roi}", ", ".join(f"{w:.1f} {m}" for w, m in blend_choices(ctx, where, roi)),
                         f"{float(b['pixcorr']):.3f} / {float(b['ssim']):.3f}",
                         cell("pixel_ridge", "pixcorr"), cell("pixel_ridge", "ssim"), cell("pixel_ridge", top1),
                         cell("nearest_train", "ssim"), cell("wgan_gp", "pixcorr"), cell("wgan_gp", "ssim"),
                         cell("wgan_gp", top1), held])
    return _table(["set, ROI", "a and way (each seed)", "blend PixCorr / SSIM", "PixCorr − pixel ridge",
                   "SSIM − pixel ridge", "top-1 (judge conv5) − pixel ridge", "SSIM − nearest_train", "PixCorr − wgan_gp", "SSIM − wgan_gp",
                   "top-1 − wgan_gp", "hold-out, where a was chosen: PixCorr / SSIM − pixel ridge"], rows)


BLEND_BUILDERS = {"blend": blend}
# the smallest and largest weight any seed's hold-out chose on a set's first ROI: @blend_a_min_<set>, @blend_a_max_<set>
BLEND_DERIVED = {f"blend_a_{f.__name__}_{w}": (lambda ctx, w=w, f=f: f(a for a, _ in blend_choices(ctx, w)))
                 for w in BLEND_SETS for f in (min, max)}
