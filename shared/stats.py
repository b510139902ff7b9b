"""Statistics over test images: bootstrap intervals of a mean and paired comparisons.

Reconstruction metrics are means over test images (50 in the DIR natural test set), so a
difference between two methods is only worth reporting with its uncertainty. The
interval is the percentile bootstrap of the mean over images (resampling images with
replacement); a comparison of two methods pairs them over the same images and reports the
mean difference, its bootstrap interval and the Wilcoxon signed-rank p-value (scipy's
``wilcoxon``, two-sided; zero differences dropped, normal approximation when ties or zeros
make the exact distribution unavailable).
"""

from __future__ import annotations

import numpy as np

N_RESAMPLES = 10000
LEVEL = 0.95


def bootstrap_means(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``values``, NaNs dropped first."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.full(n_resamples, np.nan)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    step = max(1, 2_000_000 // v.size)  # resamples per block, to bound memory
    for s in range(0, n_resamples, step):
        k = min(step, n_resamples - s)
        out[s:s + k] = v[rng.integers(0, v.size, size=(k, v.size))].mean(axis=1)
    return out


def bootstrap_ci(values: np.ndarray, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN, NaN when there are none)."""
    means = bootstrap_means(values, n_resamples, seed)
    if np.isnan(means).all():
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, seed: int = 0) -> dict:
    """``{"mean", "lo", "hi", "n"}`` of per-image values."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(v, seed=seed)
    finite = v[np.isfinite(v)]
    return {"mean": float(finite.mean()) if finite.size else float("nan"), "lo": lo, "hi": hi,
            "n": int(finite.size)}


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict:
    """``a`` against ``b`` over the same images (equal length, same order): mean of ``a - b``,
    its bootstrap interval and the two-sided Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    out = {"diff": float(d.mean()) if d.size else float("nan"), "n": int(d.size),
           "n_nonzero": int(np.count_nonzero(d))}  # what the signed-rank test rests on
    out["lo"], out["hi"] = bootstrap_ci(d, seed=seed)
    if d.size == 0 or np.all(d == 0):
        out["p"] = 1.0  # identical over every image: no evidence of a difference
    else:
        out["p"] = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return out
