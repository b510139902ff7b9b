"""The shipped ablations' overview blocks for ``tools/make_docs.py`` (each comparison's README under
``results/reference/compare/<name>/``): per variant, the generator's reconstruction beside its stage 1's decoding.

One row per variant (its first subject and ROI): ``wgan_gp``'s test PixCorr and SSIM (mean over seeds ± their SD),
its difference from the reference variant with the verdict of ``stats.md`` (beyond the spread between seeds or
not), the baselines' PixCorr (pixel ridge, ``nearest_train``), the hold-out's PixCorr / SSIM, and the variant's
decoding averaged over its decoded layers (test and out-of-fold profile correlation, ``decoding.csv``)."""

from __future__ import annotations

import numpy as np

from stage2_generate.compare.decoding_table import SEP  # between variant names in decoding.csv's `shared_with`
from tools.doc_sources import md_table

ABLATIONS = ("decoders", "inputs", "layers", "losses", "methods", "rois")
VERDICT = {"win": "better", "loss": "worse"}  # stats.csv's verdicts of a variant against the reference, in words


def _decoding(rows: list[dict], variant: str) -> tuple[float, float] | None:
    """Mean over the variant's decoded layers (its first subject and ROI) of the test and out-of-fold profile r."""
    mine = [r for r in rows if r["variant"] == variant or variant in r["shared_with"].split(SEP)]
    if not mine:
        return None
    first = [r for r in mine if (r["subject"], r["roi"]) == (mine[0]["subject"], mine[0]["roi"])]
    test = np.mean([float(r["profile_corr"]) for r in first])
    oof = [float(r["oof_profile_corr"]) for r in first if r["oof_profile_corr"] not in ("", "n/a")]
    return float(test), float(np.mean(oof)) if oof else float("nan")


def _joins(text: str, names: list[str]) -> list[str] | None:
    """The names whose ", "-join ``text`` is (in order), or None: how the report names a baseline row that
    several variants share (names may hold commas, so the text is split at the known names, not at commas)."""
    if text == "":
        return []
    for name in names:
        if text == name or text.startswith(name + ", "):
            rest = _joins(text[len(name) + 2:] if text != name else "", names)
            if rest is not None:
                return [name, *rest]
    return None


def _shared_baseline(table: list[dict], variant: str, where: tuple[str, str], method: str) -> dict | None:
    """The row of baseline ``method`` that ``variant`` shares with others: the report names it ``all variants``, or
    the variants it stands for joined by ", "."""
    names = list(dict.fromkeys(r["variant"] for r in table if r["method"] == "wgan_gp"))
    rows = [r for r in table if r["method"] == method and (r["subject"], r["roi"]) == where]
    return next((r for r in rows if r["variant"] == "all variants"), None) or next(
        (r for r in rows if variant in (_joins(r["variant"], names) or [])), None)


def ablation_row(ctx, name: str, variant: str) -> dict:
    """The overview's numbers of one variant of comparison ``name`` (its first subject and ROI)."""
    folder = f"compare/{name}"
    table = ctx.rows(f"{folder}/table.csv")
    mine = [r for r in table if r["variant"] == variant]
    first = (mine[0]["subject"], mine[0]["roi"])
    mine = [r for r in mine if (r["subject"], r["roi"]) == first]
    g = next(r for r in mine if r["method"] == "wgan_gp")
    ridge, nearest = (next((r for r in mine if r["method"] == m), None) or _shared_baseline(table, variant, first, m)
                      for m in ("pixel_ridge", "nearest_train"))
    stats = [r for r in ctx.rows(f"{folder}/stats.csv") if r["variant"] == variant and r["method"] == "wgan_gp"
             and (r["subject"], r["roi"]) == first and "same variant" not in r["vs"]]
    decoding = _decoding(ctx.rows(f"{folder}/decoding.csv"), variant)
    return {"pixcorr": float(g["pixcorr"]), "pixcorr_sd": float(g["pixcorr_seed_sd"] or 0),
            "ssim": float(g["ssim"]), "ssim_sd": float(g["ssim_seed_sd"] or 0), "seeds": g["n_seeds"],
            "vs": stats[0] if stats else None, "ridge": float(ridge["pixcorr"]) if ridge else None,
            "nearest": float(nearest["pixcorr"]) if nearest else None,
            "val": (g.get("val_pixcorr"), g.get("val_ssim")), "decoding": decoding, "roi": first[1]}


def ablation(ctx, name: str) -> str:
    """The overview table of comparison ``name``."""
    ctx.used.add(f"compare/{name}/table.md")
    variants = list(dict.fromkeys(r["variant"] for r in ctx.rows(f"compare/{name}/table.csv")
                                  if r["method"] == "wgan_gp"))  # a shared baseline's row names no variant of its own
    overview = {v: ablation_row(ctx, name, v) for v in variants}
    rows = []
    for v, a in overview.items():
        vs = a["vs"]
        against = "reference" if vs is None else " / ".join(
            f"{float(vs[f'{m}_diff']):+.3f}: {VERDICT.get(vs[f'{m}_verdict'], vs[f'{m}_verdict'])}"
            for m in ("pixcorr", "ssim"))
        val = " / ".join(f"{float(x):.3f}" if x not in (None, "") else "n/a" for x in a["val"])
        dec = "n/a" if a["decoding"] is None else f"{a['decoding'][0]:.3f} / {a['decoding'][1]:.3f}"
        rows.append([v, a["roi"], f"{a['pixcorr']:.3f} ±{a['pixcorr_sd']:.3f} / {a['ssim']:.3f} ±{a['ssim_sd']:.3f}",
                     against, " / ".join("n/a" if a[b] is None else f"{a[b]:.3f}" for b in ("ridge", "nearest")), val, dec])
    seeds = overview[variants[0]]["seeds"]
    return md_table(["variant", "roi", f"wgan_gp PixCorr / SSIM ({seeds} seeds)",
                     "PixCorr / SSIM − reference: verdict", "pixel ridge / nearest_train PixCorr", "validation PixCorr / SSIM",
                     "decoding profile r, test / out-of-fold (mean over layers)"], rows)


ABLATION_BUILDERS = {f"ablation-{name}": (lambda ctx, n=name: ablation(ctx, n)) for name in ABLATIONS}
