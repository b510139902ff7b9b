"""Benchmark: stage 1's decoders against fastl2lir and scikit-learn, same data, same process,
each method timed at several unit counts and fitted as fixed cost + cost per unit.

One DIR-sized simulated problem (1200 training images x 5 repetitions = 6000 trials,
11,000 voxels, 50 test images averaged over their repetitions): images have latent
causes, voxels respond to them with trial noise (single-trial reliability near the
real data's), and the targets are the units of one layer the size of VGG19 conv4_4 at
224 px (401,408 units), each a linear read-out of the same causes plus unit noise. Units are
generated in seeded chunks, so a run on ``n`` units decodes the layer's first ``n`` units
(units are exchangeable by construction): at a shared unit count every method decodes the
same units, and the profile correlations of the table are over the same units. Methods:

- ``dense``: our kernel ridge, one penalty per layer chosen by 5-fold image-grouped CV;
- ``dense_unit``: the same with a penalty per unit;
- ``sparse``: our voxel-selected ridge (500 voxels per unit, alpha 100, the lab's setting);
- ``fastl2lir``: the fastl2lir package, same selection and penalty, at its fastest documented
  setting: ``chunk_size=0`` (one chunk) and float32 (PITFALLS.md);
- ``sklearn``: scikit-learn's ``Ridge`` (alpha 100) on all voxels;
- ``himalaya`` (when installed): himalaya's ``KernelRidgeCV`` (gallantlab), the same penalty grid and
  image-grouped folds as ``dense_unit``, a penalty per unit, on the same torch backend (CUDA when present).

Every method is timed at every count of ``--counts`` (default 1,000, 4,000 and 10,000 units), and
the methods of ``--layer-methods`` (dense, dense_unit) also on the whole layer. Each (method, count)
runs in a fresh process of its own (spawned by this one; it regenerates the same seeded data), so its
time holds no warm-up of an earlier run and its peak memory is its own; one that dies (killed, or failed on
an import) ends the benchmark at once in one line naming it, its exit status and what to install. Each run: wall time
(including the method's own Gram/kernel work and target scaling), peak resident memory of that
process (torch and the data, printed as ``base``, included) and the mean test profile correlation
with the noise-free targets. Per method, least squares on its (units, seconds) pairs gives a fixed
cost and a cost per unit (``unit_costs.py``), hence its time for the whole layer (measured where it
ran on it, projected otherwise), and the ratios of per-unit costs against fastl2lir and scikit-learn
measured in the same run. fastl2lir and scikit-learn hold a voxels x units weight matrix (on conv4_4 at
11,000 voxels: 17.7 GB in float32, 35 GB in float64), so their whole-layer times are projections of
what they could not run here in memory.

    python bench/bench_ridge.py                   # the default problem, about 17 min on 2 cores
    python bench/bench_ridge.py --json out.json   # also write the runs and fits as JSON
    python bench/bench_ridge.py --quick           # tiny sizes, runs in this process, seconds: a smoke test

Run it alone: two processes sharing 2 cores slow each other down many times over.
On a GPU machine it runs unchanged (our methods use the GPU; fastl2lir and
scikit-learn stay on the CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch

from shared.children import missing_line, run_in_child
from shared.device import resolve_device
from shared.errors import UserError
from shared.metrics import profile_correlation
from shared.ridge import ImageFolds, Standardiser
from shared.sparse_ridge import fastl2lir_fit_predict
from stage1_decode.decoders import make_decoder
from unit_costs import UnitCost, cost_ratio, fit_unit_cost  # beside this file (bench/ is on sys.path)

ALPHAS = [1e2, 1e3, 1e4, 1e5]
CHUNK = 8192  # units per generated chunk: fixed, so the layer's first n units never depend on n
METHODS = ("fastl2lir", "sparse", "sklearn", "dense", "dense_unit", "himalaya")
REFERENCES = ("fastl2lir", "sklearn")  # per-unit cost ratios are against these
# --quick: a problem of seconds, for a smoke test (explicit options still win)
QUICK = {"images": 60, "reps": 2, "voxels": 300, "test": 10, "layer_units": 3000, "counts": "100,400",
         "n_voxels": 40, "chunk": 256}


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux)."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory in MB (Linux)."""
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def simulate(args, n_units: int):
    """Trials, averaged test voxels and the layer's first ``n_units`` units (training images,
    noise-free test), seeded: every process that asks for n units gets the same arrays, and
    the first m < n of them are what a process asking for m gets."""
    rng = np.random.default_rng(0)
    n_img, d = args.images, 64
    Z = rng.standard_normal((n_img + args.test, d), dtype=np.float32)
    trial_img = np.tile(np.arange(n_img), args.reps)
    loading = rng.standard_normal((d, args.voxels), dtype=np.float32) / np.sqrt(d)
    # trial noise for a median single-trial reliability of about 0.2 (signal variance 1, noise 4)
    X = Z[trial_img] @ loading + 2.0 * rng.standard_normal((len(trial_img), args.voxels), dtype=np.float32)
    test_reps = 24
    X_test = Z[n_img:] @ loading + 2.0 / np.sqrt(test_reps) * rng.standard_normal((args.test, args.voxels),
                                                                                   dtype=np.float32)
    train = np.empty((n_img, n_units), np.float32)
    test = np.empty((args.test, n_units), np.float32)
    for c, s in enumerate(range(0, n_units, CHUNK)):  # chunk by chunk: no temporaries the target's size
        rng_t = np.random.default_rng([0, c])  # a whole chunk is always drawn, then cut to what is asked
        n = min(CHUNK, n_units - s)
        W = rng_t.standard_normal((d, CHUNK), dtype=np.float32) * rng_t.uniform(0.1, 1, CHUNK).astype(np.float32)
        clean = Z @ W[:, :n] / np.sqrt(d)
        train[:, s:s + n] = clean[:n_img] + rng_t.standard_normal((n_img, CHUNK), dtype=np.float32)[:, :n]
        test[:, s:s + n] = clean[n_img:]
    return trial_img, X, X_test, train, test


class TargetScaler:
    """Per-unit mean and SD over training trials (images weighted by repetitions), as stage 1
    computes them, chunk by chunk; ``transform`` and ``inverse`` of image-row arrays."""

    def __init__(self, Y_img: np.ndarray, trial_img: np.ndarray):
        w = (np.bincount(trial_img, minlength=len(Y_img)) / len(trial_img))[:, None]
        self.mean = np.empty(Y_img.shape[1], np.float32)
        self.std = np.empty(Y_img.shape[1], np.float32)
        for s in range(0, Y_img.shape[1], CHUNK):
            block = Y_img[:, s:s + CHUNK].astype(np.float64)
            m = (w * block).sum(0)
            self.mean[s:s + CHUNK] = m
            self.std[s:s + CHUNK] = np.maximum(np.sqrt((w * (block - m) ** 2).sum(0)), 1e-8)

    def transform(self, Y: np.ndarray) -> np.ndarray:
        return ((Y - self.mean) / self.std).astype(np.float32)

    def inverse(self, Y: np.ndarray) -> np.ndarray:
        return (Y * self.std + self.mean).astype(np.float32)


def decode(args, method: str, Xz, Xtz, trial_img, train, ys: TargetScaler, device) -> np.ndarray:
    """Test predictions ``(n_test, units)`` of ``method``, in z-scored target units."""
    if method == "himalaya":  # the gallantlab's multi-target ridge: a penalty per unit, image-grouped folds
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV

        backend = set_backend("torch_cuda" if device.type == "cuda" else "torch", on_error="raise")
        folds = ImageFolds(trial_img, args.images, 5, seed=0)
        cv = [(folds.train_trials(k), folds.held_trials[k]) for k in range(len(folds))]
        Yt = ys.transform(train)[trial_img]
        m = Yt.mean(0)
        model = KernelRidgeCV(alphas=np.array(ALPHAS), cv=cv, Y_in_cpu=True, warn=False,
                              solver_params={"n_targets_batch": args.chunk, "n_alphas_batch": len(ALPHAS)})
        model.fit(Xz, Yt - m)
        return backend.to_numpy(model.predict(Xtz)) + m
    if method in REFERENCES:
        Yt = ys.transform(train)[trial_img]  # the references take trials x units
        if method == "fastl2lir":  # chunk_size=0, float32: its fastest setting (PITFALLS.md)
            return fastl2lir_fit_predict(Xz, Yt, args.alpha, args.n_voxels, [Xtz])[0]
        from sklearn.linear_model import Ridge

        return Ridge(alpha=args.alpha, fit_intercept=False).fit(Xz, Yt - Yt.mean(0)).predict(Xtz) + Yt.mean(0)
    kind, alpha_per = {"dense": ("ridge", "layer"), "dense_unit": ("ridge", "unit"),
                       "sparse": ("sparse", "layer")}[method]
    alphas = ALPHAS if kind == "ridge" else [args.alpha]
    folds = ImageFolds(trial_img, args.images, 5, seed=0)
    dec = make_decoder(kind, alpha_per, "torch", args.n_voxels, alphas, Xz, {"test": Xtz}, folds, device)
    sample = np.sort(np.random.default_rng(1).choice(train.shape[1], min(2000, train.shape[1]), replace=False))
    choice = dec.choose((train[:, sample] - ys.mean[sample]) / ys.std[sample], oof=False)
    parts = []
    for s in range(0, train.shape[1], args.chunk):  # streamed in chunks, as stage 1 reads a layer
        cols = slice(s, s + args.chunk)
        parts.append(dec.decode((train[:, cols] - ys.mean[cols]) / ys.std[cols], choice, oof=False).tests["test"])
    return np.concatenate(parts, axis=1)


def run_method(args, method: str, units: int) -> dict:
    """One method on the layer's first ``units`` units, in its own process; its run."""
    trial_img, X, X_test, train, true = simulate(args, units)
    xs = Standardiser().fit(X)
    Xz, Xtz = xs.transform(X), xs.transform(X_test)
    del X
    device = resolve_device(args.device)
    import fastl2lir  # noqa: F401 - imports and a small solve before the clock starts
    import scipy.linalg.lapack  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    warm = make_decoder("sparse", "layer", "torch", 5, [1.0], Xz[:40, :20], {"t": Xtz[:, :20]},
                        ImageFolds(trial_img[:40], args.images, 2), device)
    warm.decode(np.ones((args.images, 3), np.float32), warm.choose(np.ones((args.images, 3)), oof=False), oof=False)
    base = rss_mb("VmRSS")  # torch and the data, before the method
    peak_rss_reset()
    t = time.perf_counter()
    ys = TargetScaler(train, trial_img)
    pred = ys.inverse(np.asarray(decode(args, method, Xz, Xtz, trial_img, train, ys, device), dtype=np.float32))
    sec = time.perf_counter() - t
    return {"method": method, "units": units, "seconds": round(sec, 4), "peak_rss_mb": round(rss_mb()),
            "base_rss_mb": round(base), "profile_corr": round(float(np.nanmean(profile_correlation(pred, true))), 4)}


def timed_run(ctx, args, method: str, units: int) -> dict:
    """``run_method`` in a spawned process (``shared.children.run_in_child``): a child that dies (killed, or
    failed on an import) ends the benchmark at once with one line naming it, its exit status and, for a
    missing package, the install command. ``--quick`` runs it in this process instead (a smoke test: process
    start-up would dominate)."""
    if args.quick:
        try:
            return run_method(args, method, units)
        except ModuleNotFoundError as exc:
            raise UserError(f"{method} on {units:,} units: {missing_line(exc.name or str(exc))}") from None
    return run_in_child(ctx, run_method, (args, method, units), f"the child process of {method} on {units:,} units")


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_s(x: float) -> str:
    return f"{x:,.1f}" if abs(x) >= 1 else f"{x:.3f}"


def summarise(runs: list[dict], methods: list[str], counts: list[int], layer_units: int) -> dict:
    """Per method: its fit, its whole-layer time (measured if it ran on the whole layer), and the
    ratios of per-unit costs (and whole-layer times) against the references."""
    fits: dict[str, UnitCost] = {m: fit_unit_cost([r["units"] for r in runs if r["method"] == m],
                                                  [r["seconds"] for r in runs if r["method"] == m]) for m in methods}
    out = {}
    for m, fit in fits.items():
        measured = [r["seconds"] for r in runs if r["method"] == m and r["units"] == layer_units]
        at_shared = next(r for r in runs if r["method"] == m and r["units"] == max(counts))
        row = fit.as_dict(layer_units)
        # a projection from a per-unit cost at or below zero (counts too close for the noise) is no time
        projected = row["layer_s"] if fit.per_unit_s > 0 else None
        row.update(layer_measured_s=measured[0] if measured else None,
                   layer_shown_s=measured[0] if measured else projected,
                   profile_corr_shared=at_shared["profile_corr"], shared_units=max(counts),
                   peak_rss_mb_shared=at_shared["peak_rss_mb"], base_rss_mb_shared=at_shared["base_rss_mb"])
        for ref in REFERENCES:
            per = cost_ratio(fits[ref], fit) if ref in fits else None
            row[f"x_{ref}_per_unit"] = None if per is None else round(per, 3)  # ref's cost over ours
            row[f"cost_vs_{ref}_per_unit"] = None if per is None else float(f"{1 / per:.4g}")  # ours over ref's
        out[m] = row
    for m, row in out.items():
        for ref in REFERENCES:
            ok = ref in out and out[ref]["layer_shown_s"] and row["layer_shown_s"]
            row[f"x_{ref}_layer"] = round(out[ref]["layer_shown_s"] / row["layer_shown_s"], 3) if ok else None
    return out


def statements(fits: dict, layer_units: int) -> list[str]:
    """The sentences the README quotes, each from this run's fits."""
    lines = []
    pairs = [("sparse", "fastl2lir", "our sparse decoder"), ("dense", "fastl2lir", "our dense decoder"),
             ("dense", "sklearn", "our dense decoder"), ("dense_unit", "himalaya", "our dense_unit decoder")]
    for ours, ref, name in pairs:
        if ours not in fits or ref not in fits:
            continue
        a, b = fits[ours], fits[ref]
        if a["ms_per_unit"] > 0 and b["ms_per_unit"] > 0:
            cost = f"{a['ms_per_unit'] / b['ms_per_unit']:.3g} times {ref}'s per conv unit " \
                   f"({a['ms_per_unit']:.3g} vs {b['ms_per_unit']:.3g} ms; {ref}'s is " \
                   f"{b['ms_per_unit'] / a['ms_per_unit']:.1f} times ours)"
        else:
            cost = (f"not measurable against {ref}'s at these counts ({a['ms_per_unit']:.3g} vs "
                    f"{b['ms_per_unit']:.3g} ms: at or below zero is within the timing noise)")
        layer = ""
        if a["layer_shown_s"] and b["layer_shown_s"]:
            layer = f"; a whole {layer_units:,}-unit layer: {fmt_s(a['layer_shown_s'])} s against " \
                    f"{fmt_s(b['layer_shown_s'])} s ({b['layer_shown_s'] / a['layer_shown_s']:.1f}x)"
        lines.append(f"{name}'s per-unit cost is {cost}{layer}")
    return lines


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--voxels", type=int, default=11000)
    p.add_argument("--test", type=int, default=50)
    p.add_argument("--layer-units", type=int, default=401_408, help="default: VGG19 conv4_4 at 224 px")
    p.add_argument("--counts", default="1000,4000,10000",
                   help="unit counts (the layer's first units) at which every method is timed; two or more")
    p.add_argument("--layer-methods", default="dense,dense_unit", help="methods also timed on the whole layer")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--n-voxels", type=int, default=500, help="voxels per unit (sparse, fastl2lir)")
    p.add_argument("--alpha", type=float, default=100.0, help="penalty of sparse, fastl2lir and sklearn")
    p.add_argument("--chunk", type=int, default=8192, help="units per streamed chunk (ours)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="write the runs and fits to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, every run in this process (seconds): a smoke test, its numbers mean nothing")
    args = p.parse_args()
    if args.quick:
        p.set_defaults(**QUICK)
        args = p.parse_args()
    try:
        args.counts = sorted({int(c) for c in args.counts.split(",")})
    except ValueError:
        p.error(f"--counts must be comma-separated integers; {args.counts!r} was given")
    if len(args.counts) < 2 or args.counts[0] < 1 or args.counts[-1] > args.layer_units:
        p.error(f"--counts needs two or more distinct counts in 1..{args.layer_units} (--layer-units) "
                f"to separate fixed from per-unit cost; {args.counts} was given")
    for key in ("methods", "layer_methods"):
        names = [m for m in getattr(args, key).split(",") if m]
        if set(names) - set(METHODS):
            p.error(f"--{key.replace('_', '-')} must name methods among {list(METHODS)}; "
                    f"{sorted(set(names) - set(METHODS))} was given")
        setattr(args, key, [m for m in METHODS if m in names])
    return args


def main() -> None:
    """The benchmark; a ``UserError`` (a child that died) is one line on stderr and exit status 2."""
    try:
        run(parse_args())
    except UserError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    """Every method at every count, each in a child process, then the fits, the table and the statements."""
    methods = list(args.methods)
    if "himalaya" in methods and importlib.util.find_spec("himalaya") is None:
        methods.remove("himalaya")
        print("himalaya is not installed (pip install 'himalaya>=0.4', as make bench does): its rows are skipped")
    print(f"data: {args.images * args.reps} trials ({args.images} images x {args.reps}) x {args.voxels} voxels, "
          f"{args.test} test images; layer of {args.layer_units:,} units; every method at "
          f"{', '.join(f'{c:,}' for c in args.counts)} units (the layer's first), "
          f"{', '.join(m for m in args.layer_methods if m in methods)} also on the whole layer; device "
          f"{resolve_device(args.device)}, torch threads {torch.get_num_threads()}; fastl2lir at "
          f"chunk_size=0 (one chunk), float32, its fastest setting", flush=True)
    ctx = mp.get_context("spawn")
    runs = []
    t0 = time.perf_counter()
    for method in methods:
        for units in args.counts + ([args.layer_units] if method in args.layer_methods and
                                    args.layer_units not in args.counts else []):
            r = timed_run(ctx, args, method, units)
            runs.append(r)
            print(f"{method:>10} {units:>9,} units {r['seconds']:9.2f} s  peak {r['peak_rss_mb']:>6} MB "
                  f"(base {r['base_rss_mb']} MB)  profile r {r['profile_corr']:.4f}", flush=True)
    print(f"all runs took {time.perf_counter() - t0:.0f} s")
    fits = summarise(runs, methods, args.counts, args.layer_units)
    shared = max(args.counts)
    print(f"\nfixed + per-unit cost, least squares on each method's (units, seconds); whole layer = "
          f"{args.layer_units:,} units, measured where the method ran on it, else projected; x REF: REF's per-unit "
          f"cost (or layer time) over the method's; fit residual: largest |measured - fit| / measured (from 3 counts); peak memory and profile r at {shared:,} units (the same units "
          f"for every method)\n")
    print("| method | units timed | seconds | fixed s | ms per unit | fit residual | whole layer s | "
          "x fastl2lir per unit | x sklearn per unit | x fastl2lir layer | peak RSS MB (base) | profile r |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m, f in fits.items():
        layer = ("- (per-unit cost below noise)" if f["layer_shown_s"] is None else fmt_s(f["layer_shown_s"])
                 + (" measured" if f["layer_measured_s"] is not None else " projected"))
        residual = f"{100 * f['max_rel_residual']:.1f} %" if len({n for n, _ in f["pairs"]}) > 2 else "-"
        print(f"| {m} | {' / '.join(f'{n:,}' for n, _ in f['pairs'])} | "
              f"{' / '.join(fmt_s(s) for _, s in f['pairs'])} | {fmt_s(f['fixed_s'])} | {f['ms_per_unit']:.4g} | "
              f"{residual} | {layer} | {fmt_ratio(f['x_fastl2lir_per_unit'])} | "
              f"{fmt_ratio(f['x_sklearn_per_unit'])} | {fmt_ratio(f['x_fastl2lir_layer'])} | "
              f"{f['peak_rss_mb_shared']} ({f['base_rss_mb_shared']}) | {f['profile_corr_shared']:.3f} |")
    print()
    lines = statements(fits, args.layer_units)
    for line in lines:
        print(line)
    if args.json:
        out = {"data": {k: getattr(args, k) for k in ("images", "reps", "voxels", "test", "layer_units", "counts",
                                                       "n_voxels", "alpha", "chunk", "quick")},
               "device": str(resolve_device(args.device)), "fastl2lir_setting": "chunk_size=0, float32",
               "runs": runs, "fits": fits, "statements": lines}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(tmp, args.json)
        print(f"runs and fits written to {args.json}")


if __name__ == "__main__":
    main()
