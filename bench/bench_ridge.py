"""Benchmark: stage 1's decoders against fastl2lir and scikit-learn, same data, same process.

One DIR-sized simulated problem (1200 training images x 5 repetitions = 6000 trials,
11,000 voxels, 50 test images averaged over their repetitions): images have latent
causes, voxels respond to them with trial noise (single-trial reliability near the
real data's), and two targets are linear read-outs of the same causes plus unit noise:
``conv`` (401,408 units, the size of VGG19 conv4_4 at 224 px) and ``fc`` (10,000
units). Methods:

- ``dense``: our kernel ridge, one penalty per layer chosen by 5-fold image-grouped CV;
- ``dense_unit``: the same with a penalty per unit;
- ``sparse``: our voxel-selected ridge (500 voxels per unit, alpha 100, the lab's setting);
- ``fastl2lir``: the fastl2lir package, same selection and penalty, at its fastest
  setting (one chunk, float32; see PITFALLS); on ``conv`` it is timed on a random
  1,000-unit subset (its cost is linear in units);
- ``sklearn``: scikit-learn's ``Ridge`` (alpha 100) on all voxels;
- ``himalaya``: himalaya's ``KernelRidgeCV`` (gallantlab), the same penalty grid and image-grouped
  folds as ``dense_unit``, a penalty per unit, on the same torch backend (CUDA when present); it
  holds trials x units in memory, so on ``conv`` it is timed on a random 20,000-unit subset.

Each method runs in a fresh process of its own (spawned by this one; it regenerates the
same seeded data), so its peak memory is its own. Each row: wall time (including each
method's own Gram/kernel work), units per second, peak resident memory of that process
(torch and the data, printed as ``base``, included) and the mean test profile
correlation with the noise-free targets. Ratios are against fastl2lir.

    python bench/bench_ridge.py                   # the default problem, about 10 min on 2 cores
    python bench/bench_ridge.py --json out.json   # also write the rows as JSON
    python bench/bench_ridge.py --conv-units 100000 --fc-units 2000   # quicker

Run it alone: two processes sharing 2 cores slow each other down many times over.
On a GPU machine it runs unchanged (our methods use the GPU; fastl2lir and
scikit-learn stay on the CPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np
import torch

from shared.device import resolve_device
from shared.metrics import profile_correlation
from shared.ridge import ImageFolds, Standardiser
from shared.sparse_ridge import fastl2lir_fit_predict
from stage1_decode.decoders import make_decoder

ALPHAS = [1e2, 1e3, 1e4, 1e5]
CHUNK = 8192


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


def simulate(args, target: str):
    """Trials, averaged test voxels and one target (training images, noise-free test), seeded:
    every process that asks for the same target gets the same arrays."""
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
    n_units = {"conv": args.conv_units, "fc": args.fc_units}[target]
    rng_t = np.random.default_rng([0, n_units])
    train = np.empty((n_img, n_units), np.float32)
    test = np.empty((args.test, n_units), np.float32)
    for s in range(0, n_units, CHUNK):  # in chunks of units, so a large target never has temporaries its size
        n = min(CHUNK, n_units - s)
        W = rng_t.standard_normal((d, n), dtype=np.float32) * rng_t.uniform(0.1, 1, n).astype(np.float32)
        clean = Z @ W / np.sqrt(d)
        train[:, s:s + n] = clean[:n_img] + rng_t.standard_normal((n_img, n), dtype=np.float32)  # unit noise
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


def run_method(args, method: str, target: str, subset: bool, queue) -> None:
    """One method on one target, in its own process; puts its row on ``queue``."""
    trial_img, X, X_test, train, true = simulate(args, target)
    xs = Standardiser().fit(X)
    Xz, Xtz = xs.transform(X), xs.transform(X_test)
    del X
    if subset:
        n_sub = args.himalaya_subset if method == "himalaya" else args.subset
        cols = np.sort(np.random.default_rng(2).choice(train.shape[1], min(n_sub, train.shape[1]), replace=False))
        train, true = np.ascontiguousarray(train[:, cols]), np.ascontiguousarray(true[:, cols])
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
        pred = backend.to_numpy(model.predict(Xtz)) + m
        del Yt
    elif method in ("fastl2lir", "sklearn"):
        Yt = ys.transform(train)[trial_img]  # the references take trials x units
        if method == "fastl2lir":
            (pred,) = fastl2lir_fit_predict(Xz, Yt, args.alpha, args.n_voxels, [Xtz])
        else:
            from sklearn.linear_model import Ridge

            pred = Ridge(alpha=args.alpha, fit_intercept=False).fit(Xz, Yt - Yt.mean(0)).predict(Xtz) + Yt.mean(0)
        del Yt
    else:
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
            result = dec.decode((train[:, cols] - ys.mean[cols]) / ys.std[cols], choice, oof=False)
            parts.append(result.tests["test"])
        pred = np.concatenate(parts, axis=1)
    pred = ys.inverse(np.asarray(pred, dtype=np.float32))
    sec = time.perf_counter() - t
    units = train.shape[1]
    queue.put({"method": method, "target": target, "units": units, "seconds": round(sec, 2),
               "units_per_s": round(units / sec, 1), "peak_rss_mb": round(rss_mb(), 0),
               "profile_corr": round(float(np.nanmean(profile_correlation(pred, true))), 4), "_base": round(base)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--voxels", type=int, default=11000)
    p.add_argument("--test", type=int, default=50)
    p.add_argument("--conv-units", type=int, default=401_408, help="default: VGG19 conv4_4 at 224 px")
    p.add_argument("--fc-units", type=int, default=10_000)
    p.add_argument("--subset", type=int, default=1000, help="units of conv on which fastl2lir (and sparse) are timed")
    p.add_argument("--himalaya-subset", type=int, default=20_000,
                   help="units of conv on which himalaya is timed (it holds trials x units in memory)")
    p.add_argument("--n-voxels", type=int, default=500, help="voxels per unit (sparse, fastl2lir)")
    p.add_argument("--alpha", type=float, default=100.0, help="penalty of sparse, fastl2lir and sklearn")
    p.add_argument("--chunk", type=int, default=8192, help="units per streamed chunk (ours)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="write the rows to this JSON file")
    args = p.parse_args()
    print(f"data: {args.images * args.reps} trials ({args.images} images x {args.reps}) x {args.voxels} voxels, "
          f"{args.test} test images; conv {args.conv_units} units, fc {args.fc_units} units; device "
          f"{resolve_device(args.device)}, torch threads {torch.get_num_threads()}", flush=True)
    plan = [("fastl2lir", "fc", False), ("sparse", "fc", False), ("sklearn", "fc", False), ("dense", "fc", False),
            ("dense_unit", "fc", False), ("himalaya", "fc", False), ("fastl2lir", "conv", True),
            ("sparse", "conv", True), ("dense", "conv", False), ("dense_unit", "conv", False),
            ("himalaya", "conv", True)]
    ctx = mp.get_context("spawn")
    rows = []
    for method, target, subset in plan:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_method, args=(args, method, target, subset, queue))
        proc.start()
        row = queue.get()
        proc.join()
        rows.append(row)
        print(f"{method:>10} {target:>4} {row['units']:>7} units {row['seconds']:8.1f} s {row['units_per_s']:>10.1f} "
              f"units/s  peak {row['peak_rss_mb']:>6.0f} MB (base {row['_base']} MB)  profile r "
              f"{row['profile_corr']:.4f}", flush=True)

    print("\n| method | target | units | seconds | units/s | x fastl2lir (units/s) | peak RSS MB (base) | profile r |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ref = {r["target"]: r["units_per_s"] for r in rows if r["method"] == "fastl2lir"}
    for r in rows:
        print(f"| {r['method']} | {r['target']} | {r['units']} | {r['seconds']:.1f} | {r['units_per_s']:.0f} | "
              f"{r['units_per_s'] / ref[r['target']]:.1f} | {r['peak_rss_mb']:.0f} ({r['_base']}) | "
              f"{r['profile_corr']:.3f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], fh, indent=1)
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
