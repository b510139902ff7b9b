"""Verb ``compare``: run every variant of a compare file through both stages, with caching,
and write one table, paired statistics, a bar plot and a grid.

Each variant runs as the two real commands a user would type (``python -m stage1_decode
run`` and ``python -m stage2_generate run``) on its resolved config, in a subprocess, so a
comparison is exactly a set of ordinary runs. Products are cached under
``<work_dir>/compare/`` by what they depend on (``shared.compare_spec``):

* ``store-<key>/``: the feature store (and generator checkpoints) shared by every variant
  whose stage-1 inputs agree apart from subjects, ROIs and decoder kind, which have their
  own files inside it; a finished stage-1 configuration leaves ``stage1-<key>.json``
  there and is not run again;
* ``results/<key>/<experiment>/``: a variant's results (``metrics.json``, ``per_image.json``,
  saved reconstructions) and ``done.json`` once stage 2 has finished; a variant with the same
  key in any comparison is reused, never recomputed.

Outputs, under ``<results_dir>/compare/<name>/``: ``table.md``/``table.csv`` (one row per
variant, subject, ROI and method: every metric's mean over test images with a 95% bootstrap
interval), ``stats.md`` (each variant against the reference, paired over the same images:
difference, interval, Wilcoxon p), ``bars.png``, ``grid.png`` and ``compare.json`` (where each
variant's results are, for ``export``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from shared import stats
from shared.compare_spec import CompareSpec, Variant, load_compare, result_key, stage1_key, store_key
from shared.config import Config, dump_yaml, to_dict
from shared.errors import UserError
from shared.faults import failpoint
from shared.report import VALIDATION_SECTION, csv_table, markdown_table
from shared.runs import atomic_write_json, atomic_write_text
from stage2_generate.recon_files import split_method_key

log = logging.getLogger(__name__)

METRIC_ORDER = ["pixcorr", "ssim", "alexnet2", "alexnet5", "pairwise_id_pixel", "nway10_id_pixel"]
BASELINES = ("pixel_ridge", "nearest_train")
VALIDATION_SHOWN = ("pixcorr", "ssim")  # validation scores shown beside the test scores


# ------------------------------------------------------------------------ running


def variant_paths(cfg: Config) -> tuple[Config, Path, Path]:
    """``(config as run, its store folder, its results folder)`` in the compare cache."""
    import copy

    cache = Path(cfg.work_dir) / "compare"
    run_cfg = copy.deepcopy(cfg)
    run_cfg.eval.save_reconstructions = True  # the grid and export read them
    run_cfg.work_dir = str(cache / f"store-{store_key(cfg)}")
    run_cfg.results_dir = str(cache / "results" / result_key(cfg))
    return run_cfg, run_cfg.work_path, run_cfg.results_path


def _die_with_parent(parent: int) -> None:
    """In the child: receive SIGTERM when compare dies (Linux), so a killed compare leaves no stage
    running that holds its variant's lock (and stop at once if it died before this was set up)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the child finishes its stage on its own
        return
    if os.getppid() != parent:
        os._exit(1)


def _run_stage(module: str, config_path: Path, what: str) -> None:
    """Run ``python -m <module> run --config <config_path>``, its output passed through."""
    cmd = [sys.executable, "-m", module, "run", "--config", str(config_path)]
    parent = os.getpid()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, preexec_fn=lambda: _die_with_parent(parent))
    tail = b""
    assert proc.stderr is not None
    while True:
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        tail = (tail + chunk)[-8192:]
        # the child's own `error:` line is not passed through: compare reports it, once, naming the variant
        sys.stderr.buffer.write(b"".join(ln for ln in chunk.splitlines(keepends=True) if not ln.startswith(b"error:")))
        sys.stderr.flush()
    rc = proc.wait()
    if rc == 0:
        return
    lines = [ln for ln in tail.decode(errors="replace").replace("\r", "\n").splitlines() if ln.startswith("error:")]
    if rc == 130:
        raise KeyboardInterrupt
    if lines:
        raise UserError(f"{what}: {lines[-1][len('error:'):].strip()} (config {config_path})")
    raise UserError(f"{what} failed with exit status {rc} (see above); rerun it alone with "
                    f"python -m {module} run --config {config_path}")


def check_variant_inputs(variants: list[Variant]) -> None:
    """The input checks of both stages, for every variant still to run, before compare writes anything
    (a simulated experiment not yet written is checked by its stage 1)."""
    from shared.config import perceptual_weights
    from shared.datasets import check_inputs
    from shared.featnet import check_weights

    seen = set()
    for v in variants:
        c = v.cfg
        try:
            for net, weights in {(c.features.network, c.features.weights), (c.eval.judge_network, c.eval.judge_weights),
                                 (c.generator.perceptual_network, perceptual_weights(c))}:
                if (net, weights) not in seen:
                    check_weights(net, weights)
                    seen.add((net, weights))
            data = json.dumps([to_dict(c)["data"], c.decoder.cv_folds, len(c.decoder.alphas) > 1 or c.decoder.train_oof])
            if data not in seen and not (c.data.source == "simulated" and not c.data_root.exists()):
                check_inputs(c)
                seen.add(data)
        except UserError as exc:
            raise UserError(f"variant {v.name!r}: {exc}") from None


def run_variant(v: Variant, i: int, n: int) -> dict:
    """Both stages of one variant, each skipped when its products are cached; returns its record."""
    run_cfg, store_dir, results = variant_paths(v.cfg)
    done_path = results / "done.json"
    record = _record(v, results)
    if done_path.is_file():
        done = json.loads(done_path.read_text())
        log.info("variant %d/%d %r: reused (results %s, computed %s)", i, n, v.name, results, done.get("finished"))
        return {**record, "reused": "both stages"}
    results.mkdir(parents=True, exist_ok=True)
    config_path = results / "config.yaml"
    atomic_write_text(config_path, dump_yaml(run_cfg))
    s1_marker = store_dir / f"stage1-{stage1_key(v.cfg)}.json"
    t0 = time.time()
    if s1_marker.is_file():
        log.info("variant %d/%d %r: stage 1 reused (feature store %s, decoded by %s)", i, n, v.name, store_dir,
                 json.loads(s1_marker.read_text()).get("by"))
        reused = "stage 1"
    else:
        log.info("variant %d/%d %r: stage 1 (feature store %s)", i, n, v.name, store_dir)
        _run_stage("stage1_decode", config_path, f"variant {v.name!r}, stage 1")
        atomic_write_json(s1_marker, {"by": v.name, "config": str(config_path),
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        reused = "nothing"
    log.info("variant %d/%d %r: stage 2 (results %s)", i, n, v.name, results)
    _run_stage("stage2_generate", config_path, f"variant {v.name!r}, stage 2")
    atomic_write_json(done_path, {"variant": v.name, "result_key": record["result_key"],
                                  "seconds": round(time.time() - t0, 1),
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return {**record, "reused": reused}


# ---------------------------------------------------------------------- collecting


def _per_image(results: Path) -> dict:
    path = results / "per_image.json"
    if not path.is_file():
        raise UserError(f"{path} is missing (results of an older stage 2); delete {results.parent} and rerun compare")
    return json.loads(path.read_text())


def _validation(results: Path) -> dict:
    """``subject -> method -> mean scores`` on the validation hold-out of the training images."""
    return json.loads((results / "metrics.json").read_text()).get(VALIDATION_SECTION, {})


def collect(spec: CompareSpec, records: list[dict]) -> list[dict]:
    """Per-image values of every row: variant's method (and its true-feature ceiling), then baselines
    (a baseline identical in several variants is listed once)."""
    rows: list[dict] = []
    baselines: list[dict] = []
    for v, rec in zip(spec.variants, records):
        split = next(iter(v.cfg.data.test))
        per = _per_image(Path(rec["results"]))[split]
        validation = _validation(Path(rec["results"]))
        first_roi = v.cfg.data.rois[0]
        for subject, by_method in per.items():
            for key, values in by_method.items():
                method, roi = split_method_key(key, first_roi)
                metrics = {k: np.asarray(x, dtype=np.float64) for k, x in values.items() if k != "names"}
                row = {"variant": v.name, "subject": subject, "roi": roi, "method": method, "split": split,
                       "names": list(values["names"]), "values": metrics, "results": rec["results"],
                       "validation": validation.get(subject, {}).get(key, {})}
                if method in (spec.method, f"{spec.method}_true_features", *spec.also):
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
    present = list(dict.fromkeys(k for r in rows for k in r["values"]))
    return [m for m in METRIC_ORDER if m in present] + [m for m in present if m not in METRIC_ORDER]


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
            f"`{spec.method}_true_features`: the same generator fed the true features (a ceiling). Baselines "
            f"(`pixel_ridge`, `nearest_train`) are listed once per distinct result.\n\n")
    if val_cols:
        head += (f"`{'`, `'.join(val_cols)}`: the same method's mean on the validation hold-out of the training "
                 f"images (never trained on; settings are chosen there, not on the test images).\n\n")
    atomic_write_text(out / "table.md", head + markdown_table(md_rows, keys + metrics + val_cols))
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
             f"better for every metric. No correction for multiple comparisons.{also}\n"]
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
    panels = {m: [tuple(r["summary"].get(m, nan)[k] for k in ("mean", "lo", "hi")) for r in shown]
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
    shown = shown_rows(spec, rows, ("pixel_ridge",))
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


# ---------------------------------------------------------------------------- verb


def add_base_argument(parser) -> None:
    parser.add_argument("--base", metavar="CONFIG", help="run the compare file over this experiment config (e.g. your "
                        "own data) instead of its 'base'; results go to results/compare/<name>_<config's stem>")


def add_arguments(parser) -> None:
    add_base_argument(parser)
    parser.add_argument("--only", action="append", default=[], metavar="VARIANT",
                        help="run only these variants (repeatable); the tables cover what has finished")


def compare_verb(args) -> None:
    t0 = time.time()
    spec = load_compare(args.config, args.overrides, args.base)
    ref_cfg = spec.variant(spec.reference).cfg
    out = Path(ref_cfg.results_dir) / "compare" / spec.name
    if args.dry_run:
        for v in spec.variants:
            sys.stdout.write(f"# variant {v.name!r}: {v.changes}\n" + dump_yaml(v.cfg) + "\n")
        return
    only = list(dict.fromkeys(args.only))
    todo = [v for v in spec.variants if not only or v.name in only]
    if only and len(todo) != len(only):
        missing = sorted(set(only) - {v.name for v in todo})
        raise UserError(f"--only names no variant {missing[0]!r}; variants: {', '.join(v.name for v in spec.variants)}")
    check_variant_inputs([v for v in todo if run_variant_record(v) is None])
    from shared.runs import ExperimentLock

    lock = ExperimentLock.acquire(out, f"comparison '{spec.name}' ({out})")  # one compare of a name at a time
    log.info("compare %s: %d variants of %s, results in %s", spec.name, len(spec.variants), spec.base, out)
    records = []
    for i, v in enumerate(todo):
        records.append(run_variant(v, i + 1, len(todo)))
        failpoint("compare.variant")
    finished = [(v, r) for v, r in zip(todo, records)]
    if args.only:  # the tables cover every variant that has finished
        finished = [(v, run_variant_record(v)) for v in spec.variants]
        finished = [(v, r) for v, r in finished if r is not None]
    if not any(v.name == spec.reference for v, _ in finished):
        log.info("the reference variant %r has not run yet; no tables written", spec.reference)
        return
    sub = dataclasses.replace(spec, variants=[v for v, _ in finished])
    recs = [r for _, r in finished]
    rows = collect(sub, recs)
    summarise_rows(rows, ref_cfg.seed)
    paired = paired_rows(sub, rows, ref_cfg.seed)
    write_tables(out, sub, rows, paired)
    bars_plot(sub, rows, out / "bars.png", f"compare {spec.name}: mean over test images, 95% bootstrap interval")
    compare_grid(sub, rows, out / "grid.png", ref_cfg.eval.grid_columns)
    atomic_write_json(out / "compare.json", {
        "name": spec.name, "file": str(spec.path), "base": str(spec.base), "reference": spec.reference,
        "method": spec.method, "variants": recs,
        "summary": [{k: r[k] for k in ("variant", "subject", "roi", "method")} | {"summary": r["summary"]}
                    for r in rows],
        "paired": paired,
    })
    lock.release()
    reused = sum(r["reused"] == "both stages" for r in records)
    log.info("compare %s done in %.0f s (%d of %d variants reused); %s/table.md, stats.md, bars.png, grid.png",
             spec.name, time.time() - t0, reused, len(records), out)


def _record(v: Variant, results: Path) -> dict:
    return {"name": v.name, "changes": v.changes, "result_key": result_key(v.cfg), "store_key": store_key(v.cfg),
            "results": str(results), "config": str(results / "config.yaml")}


def run_variant_record(v: Variant) -> dict | None:
    """The record of a variant that has finished earlier (None if it has not)."""
    _, _, results = variant_paths(v.cfg)
    if not (results / "done.json").is_file():
        return None
    return {**_record(v, results), "reused": "both stages"}
