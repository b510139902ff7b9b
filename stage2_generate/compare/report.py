"""The rows of a comparison and what is written from them: per-image values of every variant's
method and the baselines over every seed (``collect``), their means over seeds with intervals over
seeds and images and the between-seed SD (``seed_stats``), paired statistics and verdicts against the
reference variant, ``table.md``/``table.csv`` and ``stats.md``/``stats.csv`` (the figures: ``figures.py``; the
decoding table: ``decoding_table.py``).

A row is one (variant, subject, ROI, method); its ``values`` map each metric to an array of shape
``(n_seeds, n_images)`` (the seeds in ``seeds``, the images in ``names``), one line per generator seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import stats
from shared.config import BASELINES, GENERATOR_ROWS
from shared.evaluation import LOWER_IS_BETTER, VALIDATION_SHOWN, metric_order
from shared.report import csv_table, markdown_table, metric_legend, version_stamp
from shared.runs import atomic_write_text
from stage2_generate.compare import seed_stats
from stage2_generate.compare.run_results import read_per_image, read_threads, read_validation
from stage2_generate.compare.spec import CompareSpec
from stage2_generate.recon_files import split_method_key

VAL_SEEDS = ", averaged over seeds ±the between-seed SD (stats.md tests each difference on it)"
THREADS_NOTE = ("a thread count alone moves a trained generator's mean by up to 0.04, so stats.md marks a pair "
                "computed under different counts")
SINGLE_SEED = ("Single seed: differences are not tested against seed noise (a generator seed alone moves a "
               "trained method's scores; run the comparison with `seeds: 3` or `--seeds 3`).")


# ---------------------------------------------------------------------- collecting


def stack_seeds(per_seed: list[tuple[list[str], dict[str, np.ndarray]]]) -> tuple[list[str], dict[str, np.ndarray]]:
    """One row's per-image values of every seed, ``[(names, {metric: (n_images,)})]`` in seed order, as
    ``(names, {metric: (n_seeds, n_images)})``: the images in the first seed's order, matched by name
    (NaN where a seed lacks an image or a metric; the seeds of a variant share their test images)."""
    names = list(per_seed[0][0])
    metrics = list(dict.fromkeys(m for _, values in per_seed for m in values))
    out = {m: np.full((len(per_seed), len(names)), np.nan) for m in metrics}
    for s, (seed_names, values) in enumerate(per_seed):
        index = {n: i for i, n in enumerate(seed_names)}
        have = [j for j, n in enumerate(names) if n in index]
        for m, v in values.items():
            out[m][s, have] = np.asarray(v, dtype=np.float64)[[index[names[j]] for j in have]]
    return names, out


def _validation_values(per_seed: list[dict]) -> dict[str, list[float | None]]:
    """Each validation score's value per seed (None where a seed lacks it)."""
    keys = list(dict.fromkeys(k for v in per_seed for k in v))
    ok = lambda x: isinstance(x, (int, float)) and np.isfinite(x)  # noqa: E731
    return {k: [float(v[k]) if ok(v.get(k)) else None for v in per_seed] for k in keys
            if any(ok(v.get(k)) for v in per_seed)}


def _mean_validation(per_seed: list[dict]) -> dict:
    """Validation means averaged over the seeds that have them."""
    return {k: float(np.mean([x for x in vals if x is not None])) for k, vals in _validation_values(per_seed).items()}


def _validation_sd(per_seed: list[dict]) -> dict:
    """The between-seed SD (ddof=1) of each validation score, where two or more seeds have it."""
    out = {}
    for k, vals in _validation_values(per_seed).items():
        have = [x for x in vals if x is not None]
        if len(have) >= 2:
            out[k] = float(np.std(have, ddof=1))
    return out


def collect(spec: CompareSpec, records: list[dict]) -> list[dict]:
    """Per-image values of every row over its seeds: each variant's method (and, for the generator, its
    true-feature row) and `also` methods, then baselines (a baseline identical in several variants is
    listed once). ``records``: one per run of ``spec.variants``, in its order."""
    references = GENERATOR_ROWS[1:] if spec.method == GENERATOR_ROWS[0] else []  # the true-feature row
    grouped: dict[tuple, dict] = {}  # (variant row, subject, roi, method) -> its runs
    for v, rec in zip(spec.variants, records):
        split = next(iter(v.cfg.data.test))
        per = read_per_image(Path(rec["results"]))[split]
        validation = read_validation(Path(rec["results"]))
        threads = read_threads(Path(rec["results"]))
        first_roi = v.cfg.data.rois[0]
        for subject, by_method in per.items():
            for key, values in by_method.items():
                method, roi = split_method_key(key, first_roi)
                g = grouped.setdefault((v.row, subject, roi, method), {
                    "variant": v.row, "subject": subject, "roi": roi, "method": method, "split": split,
                    "seeds": [], "per_seed": [], "results_by_seed": [], "validation_by_seed": [], "threads": []})
                g["seeds"].append(v.seed)
                g["threads"].append(threads)
                g["per_seed"].append((list(values["names"]), {k: x for k, x in values.items() if k != "names"}))
                g["results_by_seed"].append(rec["results"])
                g["validation_by_seed"].append(validation.get(subject, {}).get(key, {}))
    rows: list[dict] = []
    baselines: list[dict] = []
    for g in grouped.values():
        names, values = stack_seeds(g.pop("per_seed"))
        row = {**g, "names": names, "values": values, "results": g["results_by_seed"][0],
               "validation": _mean_validation(g["validation_by_seed"]),
               "validation_sd": _validation_sd(g["validation_by_seed"]),
               "validation_seeds": _validation_values(g.pop("validation_by_seed"))}
        if row["method"] in (spec.method, *references, *spec.also):
            rows.append(row)
        elif row["method"] in BASELINES:
            same = next((b for b in baselines if b["method"] == row["method"] and b["subject"] == row["subject"]
                         and b["roi"] == row["roi"] and b["names"] == names and b["values"].keys() == values.keys()
                         and all(np.array_equal(b["values"][k], values[k], equal_nan=True) for k in values)), None)
            if same is None:
                baselines.append({**row, "variants": [row["variant"]]})
            else:
                same["variants"].append(row["variant"])
    n_variants = len(spec.rows())
    for b in baselines:
        b["variant"] = "all variants" if len(b["variants"]) == n_variants else ", ".join(b["variants"])
    return rows + baselines


def metric_names(rows: list[dict]) -> list[str]:
    return metric_order(k for r in rows for k in r["values"])


def summarise_rows(rows: list[dict], seed: int) -> None:
    """Each row's ``summary``: per metric, ``seed_stats.summary`` (mean over seeds, interval over seeds and
    images, between-seed SD)."""
    for r in rows:
        r["summary"] = {m: seed_stats.summary(v, seed=seed) for m, v in r["values"].items()}


def paired_rows(spec: CompareSpec, rows: list[dict], seed: int) -> list[dict]:
    """Each variant's method against the reference's (with the same matrix values), per subject and ROI,
    over their shared images and seeds; a variant on an ROI the reference lacks is paired with its first
    ROI. Then each `also` method against `method` of the same variant."""
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
        if refv is None or refv.row == r["variant"]:
            continue
        base = ref.get((refv.row, r["subject"], r["roi"])) or first.get((refv.row, r["subject"]))
        if base is None:
            continue
        out.append(paired_entry(r, base, f"{refv.row} ({base['roi']})", seed))
    for r in rows:  # the other methods against `method` of the same variant, subject and ROI
        base = ref.get((r["variant"], r["subject"], r["roi"]))
        if r["method"] not in spec.also or base is None:
            continue
        out.append(paired_entry(r, base, f"{spec.method} (same variant)", seed))
    return out


def paired_entry(r: dict, base: dict, vs: str, seed: int) -> dict:
    """Row ``r`` against row ``base`` over their shared images (by name) and seeds: the seeds both ran
    (seed i against seed i), else their first seeds in order (rows whose configs set other seeds)."""
    base_index = {n: i for i, n in enumerate(base["names"])}
    ia = [i for i, n in enumerate(r["names"]) if n in base_index]
    ib = [base_index[r["names"][i]] for i in ia]
    sa, sb = list(r.get("seeds") or [None]), list(base.get("seeds") or [None])
    common = [s for s in sa if s in sb]
    ka, kb = ([sa.index(s) for s in common], [sb.index(s) for s in common]) if common else \
        (list(range(min(len(sa), len(sb)))),) * 2
    entry = {"variant": r["variant"], "method": r["method"], "subject": r["subject"], "roi": r["roi"], "vs": vs,
             "n_images": len(ia), "n_seeds": len(ka), "seeds": [sa[k] for k in ka],
             "threads": _threads_pair(r, ka, base, kb)}
    for m in r["values"]:
        if m in base["values"]:
            a = seed_stats.as_matrix(r["values"][m])[np.ix_(ka, ia)]
            b = seed_stats.as_matrix(base["values"][m])[np.ix_(kb, ib)]
            entry[m] = seed_stats.paired_summary(a, b, seed=seed, lower_is_better=m in LOWER_IS_BETTER)
    va, vb = r.get("validation_seeds", {}), base.get("validation_seeds", {})
    entry["validation"] = {m: seed_stats.seed_paired([va[m][k] for k in ka], [vb[m][k] for k in kb],
                                                     lower_is_better=m in LOWER_IS_BETTER)
                           for m in VALIDATION_SHOWN if m in va and m in vb}
    return entry


# ------------------------------------------------------------------------ writing


def _cell(s: dict) -> str:
    """``mean [lo, hi]``, with ``±seed SD`` when the row has several seeds."""
    text = f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"
    return text + (f" ±{_sd(s['seed_sd'])}" if s.get("n_seeds", 1) > 1 else "")


def _sd(sd: float | None) -> str:
    return "n/a" if sd is None else f"{sd:.3f}"


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _seed_threads(r: dict, index) -> list:
    """The thread counts (each a list) of a row's seeds at ``index``, None for a seed without a record."""
    threads = r.get("threads") or []
    return [threads[k] if k < len(threads) else None for k in index]


def _threads_text(r: dict, index: list[int] | None = None) -> str:
    """The CPU thread counts a row's seeds (those at ``index``, default all) were trained under: ``1``, ``1/2``
    (seeds under different counts, or one training resumed under another), ``n/a`` where one is unknown."""
    picked = _seed_threads(r, range(len(r.get("threads") or [])) if index is None else index)
    if not picked or any(t is None for t in picked):
        return "n/a"
    return "/".join(map(str, sorted({t for seed in picked for t in seed})))


def _threads_pair(r: dict, ka: list[int], base: dict, kb: list[int]) -> str:
    """The thread counts of a pair, seed i against seed i: one count when every pair agrees, ``n/a`` where one
    is unknown, else ``row vs base: differ``."""
    a, b = _seed_threads(r, ka), _seed_threads(base, kb)
    if any(t is None for t in a + b):
        return "n/a"
    if all(x == y and len(x) == 1 for x, y in zip(a, b)):
        return _threads_text(r, ka)
    return f"{_threads_text(r, ka)} vs {_threads_text(base, kb)}: differ"


def _seed_cell(e: dict) -> str:
    """``diff ±seed SD: verdict`` of a difference known per seed only."""
    if e["diff"] is None:
        return "n/a"
    sd = "" if e["seed_sd"] is None else f" ±{e['seed_sd']:.3f}"
    return f"{e['diff']:+.3f}{sd}: {e['verdict']}"


def _paired_cell(e: dict) -> str:
    """``diff [lo, hi] ±seed SD p=… k=…: verdict`` (no SD with one seed)."""
    sd = f" ±{_sd(e['seed_sd'])}" if e.get("n_seeds", 1) > 1 else ""
    return (f"{e['diff']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}]{sd} p={_p(e['p'])} k={e['n_nonzero']}: "
            f"{e['verdict']}")


def _val_cell(r: dict, m: str) -> str:
    """A validation mean, ``±seed SD`` where several seeds have it."""
    sd = r.get("validation_sd", {}).get(m)
    return f"{r['validation'][m]:.3f}" + ("" if sd is None else f" ±{sd:.3f}")


def _num(x) -> float | str:
    """A CSV value: the float, or empty where it is not defined (a single seed's SD)."""
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else x


def several_seeds(rows: list[dict]) -> bool:
    """Whether any row averages several seeds."""
    return any(len(r.get("seeds") or [None]) > 1 for r in rows)


def table_legend(rows: list[dict]) -> str:
    """The sentence saying what each table cell holds."""
    if several_seeds(rows):
        seeds = sorted({s for r in rows for s in r.get("seeds", []) if s is not None})
        return (f"Each cell: mean over generator seeds of each seed's mean over test images [95% percentile "
                f"bootstrap interval over seeds and images, {stats.N_RESAMPLES} resamples: the seeds drawn with "
                f"replacement, then the test images with replacement, the same images for every seed] ±the "
                f"between-seed standard deviation of the seed means. `seeds`: how many generator seeds the row "
                f"averages (generator.seed {', '.join(map(str, seeds))}); the experiment's seed, and so stage 1, "
                f"is the same for all. A deterministic row (a baseline) has ±0.000. With 3 seeds the interval "
                f"spans about the lowest to the highest seed mean, widened by the image noise.")
    return (f"Each cell: mean over test images [95% percentile bootstrap interval, {stats.N_RESAMPLES} resamples "
            f"of the images]. {SINGLE_SEED}")


def write_tables(out: Path, spec: CompareSpec, rows: list[dict], paired: list[dict]) -> None:
    metrics = metric_names(rows)
    keys = ["variant", "subject", "roi", "method"]
    multi = several_seeds(rows)
    seed_col = ["seeds"] if multi else []
    val_cols = [f"val_{m}" for m in VALIDATION_SHOWN if any(m in r.get("validation", {}) for r in rows)]
    md_rows = [{**{k: r[k] for k in keys}, "seeds": len(r.get("seeds") or [None]), "threads": _threads_text(r),
                **{m: _cell(r["summary"][m]) for m in metrics if m in r["summary"]},
                **{c: _val_cell(r, c[4:]) for c in val_cols if c[4:] in r.get("validation", {})}} for r in rows]
    n_images = sorted({r["summary"][metrics[0]]["n"] for r in rows}) if rows else []
    ref_cfg = spec.variant(spec.reference).cfg
    judge = ref_cfg.eval
    from shared.weights import parse_weights

    head = (f"# Compare `{spec.name}` ({spec.path})\n\nBase config `{spec.base}`; feature network "
            f"{ref_cfg.features.network} [{parse_weights(ref_cfg.features.weights).label}]; judge "
            f"{judge.judge_network} [{parse_weights(judge.judge_weights).label}] {', '.join(judge.judge_layers)} at "
            f"{judge.judge_input_size} px; test set "
            f"`{rows[0]['split'] if rows else '?'}`, {', '.join(map(str, n_images))} test images. {table_legend(rows)} "
            f"`{spec.method}_true_features`: the same generator fed the true features (true-feature input: a "
            f"reference, not a bound; a method from decoded features can beat it). Baselines "
            f"(`{'`, `'.join(BASELINES)}`) are listed once per distinct result.\n\n")
    if val_cols:
        head += (f"`{'`, `'.join(val_cols)}`: the same method's mean on the validation hold-out of the training "
                 f"images (never trained on; settings are chosen there, not on the test images)"
                 f"{VAL_SEEDS if multi else ''}.\n\n")
    head += (f"`threads`: the CPU threads stage 2 ran under ({THREADS_NOTE}).\n\n")
    atomic_write_text(out / "table.md", head + markdown_table(md_rows, keys + seed_col + ["threads"] + metrics
                                                              + val_cols) + "\n"
                      + metric_legend(metrics) + version_stamp())
    csv_cols = (keys + [f"{m}{sfx}" for m in metrics for sfx in ("", "_lo", "_hi", "_seed_sd")]
                + ["n_images", "n_seeds", "threads"] + [f"{c}{sfx}" for c in val_cols for sfx in ("", "_seed_sd")])
    csv_rows = [{**{k: r[k] for k in keys},
                 **{f"{m}{sfx}": _num(r["summary"][m][part]) for m in metrics if m in r["summary"]
                    for sfx, part in (("", "mean"), ("_lo", "lo"), ("_hi", "hi"), ("_seed_sd", "seed_sd"))},
                 "n_images": r["summary"][metrics[0]]["n"], "n_seeds": len(r.get("seeds") or [None]),
                 "threads": _threads_text(r),
                 **{c: r["validation"][c[4:]] for c in val_cols if c[4:] in r.get("validation", {})},
                 **{f"{c}_seed_sd": _num(r.get("validation_sd", {}).get(c[4:])) for c in val_cols}} for r in rows]
    atomic_write_text(out / "table.csv", csv_table(csv_rows, csv_cols))
    if val_cols:  # the hold-out per seed, in long form: what a choice over several comparisons reads
        metrics_v = [c[4:] for c in val_cols]
        long = [{**{k: r[k] for k in keys}, "seed": "" if seed is None else seed,
                 **{m: _num(r["validation_seeds"][m][i]) for m in metrics_v if m in r.get("validation_seeds", {})}}
                for r in rows if r.get("validation_seeds") for i, seed in enumerate(r.get("seeds") or [None])]
        atomic_write_text(out / "validation.csv", csv_table(long, keys + ["seed"] + metrics_v))
    else:  # an earlier run's file must not outlive it (keep_compare would copy it)
        (out / "validation.csv").unlink(missing_ok=True)
    if any(len(r.get("seeds") or []) > 1 for r in rows):  # the test images' mean per seed, in long form
        per_seed = [{**{k: r[k] for k in keys}, "seed": seed,
                     **{m: _num(r["summary"][m]["seed_means"][i]) for m in metrics if m in r["summary"]}}
                    for r in rows for i, seed in enumerate(r.get("seeds") or [])]
        atomic_write_text(out / "seeds.csv", csv_table(per_seed, keys + ["seed"] + metrics))
    else:
        (out / "seeds.csv").unlink(missing_ok=True)
    write_stats(out, spec, metrics, paired)


def write_stats(out: Path, spec: CompareSpec, metrics: list[str], paired: list[dict]) -> None:
    """``stats.md`` (the paired differences with their verdicts, then the verdicts alone) and ``stats.csv``."""
    also = (f" Rows of {', '.join(f'`{a}`' for a in spec.also)}: that method against `{spec.method}` of the same "
            f"variant." if spec.also else "")
    multi = any(e.get("n_seeds", 1) > 1 for e in paired)
    lines = [f"# Compare `{spec.name}`: each variant against `{spec.reference}`\n",
             f"Method `{spec.method}`, paired over the same test images and the same generator seeds (seed i of "
             f"the row against seed i of `vs`): mean difference (row minus `vs`) [95% percentile bootstrap "
             f"interval over seeds and images: the seeds drawn with replacement, then the images] ±the "
             f"between-seed standard deviation of the difference (several seeds only), the two-sided Wilcoxon "
             f"signed-rank p-value (scipy) over images of the differences averaged over seeds, which rests on the "
             f"k images whose difference is not zero (identification scores near 1 tie on most images), and a "
             f"verdict. **win** / **loss**: the row is better / worse than `vs` beyond noise, i.e. the interval "
             f"excludes 0, |difference| exceeds the between-seed SD of the difference and the 95% t-interval over the "
             f"seeds' mean differences excludes 0 (with 3 seeds: beyond 2.48 seed SDs); better is higher for "
             f"every metric but `rmse` (lower is better). **within noise**: otherwise. **single seed**: one seed "
             f"ran, so the seed noise is unknown and no difference is called a win. No correction for multiple "
             f"comparisons.{also}\n"]
    if not multi:
        lines.append(SINGLE_SEED + "\n")
    heads = ["variant", "method", "subject", "roi", "vs", "n"] + (["seeds"] if multi else []) + ["threads"]
    differ = [e for e in paired if str(e.get("threads", "")).endswith("differ")]
    if differ:
        lines.append(f"**{len(differ)} pair(s) were computed under different CPU thread counts** (`threads`: row vs "
                     f"`vs`); {THREADS_NOTE}: read their verdicts as confounded by it, or rerun both under one "
                     f"count (`OMP_NUM_THREADS`, `--jobs`).\n")
    if paired:
        base = [{"variant": e["variant"], "method": e["method"], "subject": e["subject"], "roi": e["roi"],
                 "vs": e["vs"], "n": e["n_images"], "seeds": e.get("n_seeds", 1), "threads": e.get("threads", "n/a")}
                for e in paired]
        md = [{**b, **{m: _paired_cell(e[m]) for m in metrics if m in e}} for b, e in zip(base, paired)]
        lines.append(markdown_table(md, heads + metrics))
        if multi:
            lines.append("## Verdicts\n")
            lines.append(markdown_table([{**b, **{m: e[m]["verdict"] for m in metrics if m in e}}
                                         for b, e in zip(base, paired)], heads + metrics))
    else:
        lines.append("(only the reference variant ran)\n")
    val = [m for m in VALIDATION_SHOWN if any(m in e.get("validation", {}) for e in paired)]
    if val:
        lines.append("## The validation hold-out\n")
        lines.append("The same pairs on the validation hold-out of the training images, where settings are chosen "
                     "(each seed's mean over the hold-out; no per-image values are kept there, so no interval over "
                     "images): mean difference over seeds ±the between-seed SD of the difference and a verdict: "
                     "**win** / **loss** only when |difference| exceeds that SD and the 95% t-interval over the "
                     "seeds excludes 0 (with 3 seeds: beyond 2.48 SDs).\n")
        lines.append(markdown_table([{**b, **{f"val_{m}": _seed_cell(e["validation"][m]) for m in val
                                              if m in e.get("validation", {})}} for b, e in zip(base, paired)],
                                    [h for h in heads if h != "n"] + [f"val_{m}" for m in val]))
    atomic_write_text(out / "stats.md", "\n".join(lines) + version_stamp())
    parts = (("_diff", "diff"), ("_lo", "lo"), ("_hi", "hi"), ("_seed_sd", "seed_sd"), ("_p", "p"),
             ("_verdict", "verdict"))
    cols = (["variant", "method", "subject", "roi", "vs", "n_images", "n_seeds", "threads"]
            + [f"{m}{sfx}" for m in metrics for sfx, _ in parts])
    vparts = (("_diff", "diff"), ("_seed_sd", "seed_sd"), ("_verdict", "verdict"))
    cols += [f"val_{m}{sfx}" for m in val for sfx, _ in vparts]
    rows = [{**{k: e[k] for k in ("variant", "method", "subject", "roi", "vs", "n_images")},
             "n_seeds": e.get("n_seeds", 1), "threads": e.get("threads", "n/a"),
             **{f"{m}{sfx}": _num(e[m][part]) for m in metrics if m in e for sfx, part in parts},
             **{f"val_{m}{sfx}": _num(e["validation"][m][part]) for m in val if m in e.get("validation", {})
                for sfx, part in vparts}} for e in paired]
    atomic_write_text(out / "stats.csv", csv_table(rows, cols))
