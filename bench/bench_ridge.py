"""Benchmark: stage 1's kernel ridge against scikit-learn and fastl2lir, same data, same run.

Fits ridge from z-scored voxels to z-scored targets and predicts held-out samples.
Prints wall time of each tool, the ratio to ours, and the largest difference between
predictions (all three solve the same problem; fastl2lir adds an unpenalised bias,
which is zero on centred data). fastl2lir runs at its fastest documented setting
(chunk_size=0, float32) without voxel selection.

    python bench/bench_ridge.py                        # DIR scale: 6000 x 10000, 1000 units
    python bench/bench_ridge.py --units 100000 --skip-reference   # a large layer, ours only

Run it alone: two processes sharing 2 cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from shared.ridge import KernelRidge, Standardiser


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--voxels", type=int, default=10000)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--test", type=int, default=50)
    p.add_argument("--alpha", type=float, default=100.0)
    p.add_argument("--chunk", type=int, default=8192, help="units per streamed chunk (ours)")
    p.add_argument("--skip-reference", action="store_true", help="only time ours (for layers too big for the others)")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(args.samples + args.test, 50)).astype(np.float32)
    X = latent @ rng.normal(size=(50, args.voxels)).astype(np.float32) + 3 * rng.normal(
        size=(args.samples + args.test, args.voxels)).astype(np.float32)
    Xs = Standardiser().fit(X[: args.samples])
    Xtr, Xte = Xs.transform(X[: args.samples]), Xs.transform(X[args.samples:])
    print(f"data: {args.samples} samples x {args.voxels} voxels -> {args.units} units, {args.test} test samples, "
          f"alpha {args.alpha:g}, torch threads {torch.get_num_threads()}")

    def ours():
        ridge = KernelRidge(Xtr)
        H = ridge.hat(Xte, args.alpha)
        preds = []
        for s in range(0, args.units, args.chunk):  # targets generated chunk by chunk, as streamed from the store
            n = min(args.chunk, args.units - s)
            Y = latent[: args.samples] @ np.random.default_rng(s).normal(size=(50, n)).astype(np.float32)
            preds.append((H @ torch.from_numpy(Y - Y.mean(0))).numpy())
        return np.concatenate(preds, axis=1)

    pred_ours, t_ours = timed(ours)
    print(f"ours (kernel ridge, streamed): {t_ours:8.2f} s")
    if args.skip_reference:
        return
    Y = np.concatenate([latent[: args.samples] @ np.random.default_rng(s).normal(
        size=(50, min(args.chunk, args.units - s))).astype(np.float32) for s in range(0, args.units, args.chunk)], axis=1)
    Y -= Y.mean(0)

    from sklearn.linear_model import Ridge

    pred_sk, t_sk = timed(lambda: Ridge(alpha=args.alpha, fit_intercept=False).fit(Xtr, Y).predict(Xte))
    print(f"scikit-learn Ridge:            {t_sk:8.2f} s   ours is {t_sk / t_ours:5.2f}x as fast; "
          f"max |diff| {np.abs(pred_sk - pred_ours).max():.2e}")

    import fastl2lir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fastl2lir.FastL2LiR()
        _, t_fl = timed(lambda: model.fit(Xtr, Y, alpha=args.alpha, n_feat=args.voxels, chunk_size=0, dtype=np.float32))
        pred_fl = model.predict(Xte, dtype=np.float32)
    print(f"fastl2lir (dense, chunk 0, f32): {t_fl:6.2f} s   ours is {t_fl / t_ours:5.2f}x as fast; "
          f"max |diff| {np.abs(pred_fl - pred_ours).max():.2e}")


if __name__ == "__main__":
    main()
