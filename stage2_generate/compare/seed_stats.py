"""Statistics over seeds and test images: a comparison's means, intervals, seed spread and verdicts.

A trained method's score is a draw: its generator seed moves it. Each row of a comparison holds,
per metric, a matrix ``X`` of shape ``(n_seeds, n_images)``: row ``s`` is seed ``s``'s per-image
scores on the same test images (the experiment's seed, which fixes the stimuli, the hold-out and
stage 1, is the same for every seed). A deterministic method (pixel ridge, nearest training image)
has identical rows.

* **Mean**: the mean over seeds of each seed's mean over images (NaN images left out).
* **Interval** (95%): the percentile bootstrap over seeds *and* images, ``stats.N_RESAMPLES``
  resamples: each resample draws ``n_seeds`` seeds with replacement, then ``n_images`` images with
  replacement, the same images for every drawn seed (they are the same stimuli), and takes the mean
  of that block. It includes the spread between seeds; with few seeds it cannot reach beyond the
  seeds seen (with 3 seeds it spans about the lowest to the highest seed mean, widened by the image
  noise), which is why a verdict also asks for a difference larger than the seed SD. With one seed
  it is exactly ``stats.mean_ci``'s bootstrap over images.
* **Seed SD**: the standard deviation (``ddof=1``) of the seed means; None with one seed.
* **Paired** (``paired_summary``): ``A`` against ``B`` seed by seed and image by image: the
  differences ``D = A - B`` ``(n_seeds, n_images)``, their mean, the same bootstrap over seeds and
  images, the SD of the seed means of ``D``, and the two-sided Wilcoxon signed-rank p-value of the
  per-image differences averaged over seeds (an image-level test; with one seed ``stats.paired``).
* **Verdict** (``verdict``): ``"win"``/``"loss"`` only when the interval of the difference excludes 0
  **and** ``|difference|`` exceeds the between-seed SD of the difference **and** the t-interval over
  the seed means of the difference excludes 0 (with 3 seeds: more than 2.48 seed SDs); the sign is flipped for
  lower-is-better metrics (``rmse``), so "win" always means better. Otherwise ``"within noise"``;
  with one seed ``"single seed"`` (the seed noise is unknown: never a win).
"""

from __future__ import annotations

import numpy as np

from shared import stats

LEVEL = stats.LEVEL
VERDICTS = ("win", "loss", "within noise", "single seed")


def as_matrix(values) -> np.ndarray:
    """``values`` as a float ``(n_seeds, n_images)`` matrix (a 1-D array is one seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"per-image values must be (n_seeds, n_images); got shape {x.shape}")
    return x


def seed_means(x) -> np.ndarray:
    """Each seed's mean over its finite images, ``(n_seeds,)`` (NaN for a seed with none)."""
    x = as_matrix(x)
    finite = np.isfinite(x)
    counts = finite.sum(axis=1)
    sums = np.where(finite, x, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def bootstrap_means(x, n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples of ``x`` ``(n_seeds, n_images)``: seeds with replacement, then
    images with replacement (the same images for every drawn seed); NaN values left out of each mean.
    One seed: ``stats.bootstrap_means`` of its images (the same draws)."""
    x = as_matrix(x)
    n_seeds, n_images = x.shape
    if n_seeds == 1:
        return stats.bootstrap_means(x[0], n_resamples, seed)
    finite = np.isfinite(x)
    if not finite.any():
        return np.full(n_resamples, np.nan)
    values, weights = np.where(finite, x, 0.0), finite.astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    step = max(1, 2_000_000 // x.size)  # resamples per block, to bound memory
    for s in range(0, n_resamples, step):
        k = min(step, n_resamples - s)
        si = rng.integers(0, n_seeds, size=(k, n_seeds))[:, :, None]
        ii = rng.integers(0, n_images, size=(k, n_images))[:, None, :]
        total, count = values[si, ii].sum(axis=(1, 2)), weights[si, ii].sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + k] = np.where(count > 0, total / count, np.nan)
    return out


def interval(x, level: float = LEVEL, n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval over seeds and images of the mean of ``x`` (NaN, NaN if empty)."""
    means = bootstrap_means(x, n_resamples, seed)
    means = means[np.isfinite(means)]
    if means.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _sd(means: np.ndarray) -> float | None:
    """The SD (``ddof=1``) of the finite seed means; None under two (undefined, and JSON has no NaN)."""
    means = means[np.isfinite(means)]
    return float(means.std(ddof=1)) if means.size >= 2 else None


def summary(x, seed: int = 0) -> dict:
    """``{"mean", "lo", "hi", "seed_sd", "n", "n_seeds", "seed_means"}`` of ``x`` ``(n_seeds, n_images)``:
    the mean over seeds of each seed's image mean, the 95% bootstrap interval over seeds and images, the
    between-seed SD (None with one seed), the images with a finite value (most of any seed) and the seeds."""
    x = as_matrix(x)
    if x.shape[0] == 1:  # one seed: today's numbers exactly
        out = stats.mean_ci(x[0], seed=seed)
        return {**out, "seed_sd": None, "n_seeds": 1, "seed_means": [out["mean"]]}
    means = seed_means(x)
    lo, hi = interval(x, seed=seed)
    finite = means[np.isfinite(means)]
    return {"mean": float(finite.mean()) if finite.size else float("nan"), "lo": lo, "hi": hi,
            "seed_sd": _sd(means), "n": int(np.isfinite(x).sum(axis=1).max()), "n_seeds": int(x.shape[0]),
            "seed_means": [float(m) for m in means]}


def t_half_width(seed_sd: float, n_seeds: int) -> float:
    """Half the width of the 95% t-interval of a mean over ``n_seeds`` seed means with SD ``seed_sd``:
    what three seeds allow (4.30 SD / sqrt 3), where a percentile bootstrap over so few seeds is too narrow."""
    from scipy.stats import t

    return float(t.ppf(0.975, n_seeds - 1) * seed_sd / np.sqrt(n_seeds))


def verdict(diff: float, lo: float, hi: float, seed_sd: float | None, n_seeds: int,
            lower_is_better: bool = False) -> str:
    """``"win"``/``"loss"`` (better/worse beyond noise), ``"within noise"`` or ``"single seed"``.

    Beyond noise means all three: the interval ``[lo, hi]`` of the difference (over seeds and images)
    excludes 0, ``|diff|`` exceeds ``seed_sd``, the between-seed SD of the difference, and the 95%
    t-interval over the seeds' mean differences excludes 0 (``t_half_width``: with 3 seeds the difference
    must exceed 2.48 seed SDs). "Better" is a positive
    difference, or a negative one for a lower-is-better metric."""
    if n_seeds < 2:
        return "single seed"
    if not all(v is not None and np.isfinite(v) for v in (diff, lo, hi, seed_sd)):
        return "within noise"
    if not (lo > 0 or hi < 0) or abs(diff) <= seed_sd or abs(diff) <= t_half_width(seed_sd, n_seeds):
        return "within noise"
    better = diff < 0 if lower_is_better else diff > 0
    return "win" if better else "loss"


def paired_summary(a, b, seed: int = 0, lower_is_better: bool = False) -> dict:
    """``a`` against ``b``, both ``(n_seeds, n_images)`` with the same seeds and images in the same order:
    ``{"diff", "lo", "hi", "seed_sd", "p", "n", "n_nonzero", "n_seeds", "verdict"}`` (``diff``: mean of
    ``a - b``; ``p`` and ``n_nonzero``: the Wilcoxon test of the seed-averaged per-image differences)."""
    a, b = as_matrix(a), as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    n_seeds = a.shape[0]
    if n_seeds == 1:  # one seed: today's numbers exactly
        out = stats.paired(a[0], b[0], seed=seed)
        out.update(seed_sd=None, n_seeds=1)
    else:
        from scipy.stats import wilcoxon

        d = a - b  # NaN where either is NaN
        means = seed_means(d)
        finite = means[np.isfinite(means)]
        lo, hi = interval(d, seed=seed)
        per_image = seed_means(d.T)  # each image's difference averaged over its seeds
        per_image = per_image[np.isfinite(per_image)]
        out = {"diff": float(finite.mean()) if finite.size else float("nan"), "lo": lo, "hi": hi,
               "seed_sd": _sd(means), "n": int(per_image.size), "n_nonzero": int(np.count_nonzero(per_image)),
               "n_seeds": n_seeds}
        if per_image.size == 0 or np.all(per_image == 0):
            out["p"] = 1.0
        else:
            out["p"] = float(wilcoxon(per_image, zero_method="wilcox", alternative="two-sided").pvalue)
    out["verdict"] = verdict(out["diff"], out["lo"], out["hi"], out["seed_sd"], n_seeds, lower_is_better)
    return out


def seed_paired(a: list[float | None], b: list[float | None], lower_is_better: bool = False) -> dict:
    """Per-seed scores ``a`` against ``b`` (seed i against seed i) where only seed means exist (the
    validation hold-out's): ``{"diff", "seed_sd", "n_seeds", "verdict"}``. Beyond noise means both: ``|diff|``
    exceeds the between-seed SD of the differences and the 95% t-interval over the seeds excludes 0."""
    d = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x - y)],
                 dtype=np.float64)
    if d.size == 0:
        return {"diff": None, "seed_sd": None, "n_seeds": 0, "verdict": "n/a"}
    sd = _sd(d)
    diff = float(d.mean())
    if sd is None:
        result = "single seed"
    elif abs(diff) <= sd or abs(diff) <= t_half_width(sd, d.size):
        result = "within noise"
    else:
        result = "win" if (diff < 0 if lower_is_better else diff > 0) else "loss"
    return {"diff": diff, "seed_sd": sd, "n_seeds": int(d.size), "verdict": result}
