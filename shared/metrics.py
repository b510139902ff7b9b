"""Evaluation metrics, vectorised over samples and units.

Definitions follow bdpy.evals.metrics and Shen et al. 2019:

* profile correlation: per unit, Pearson r across images between prediction and truth;
* pattern correlation: per image, Pearson r across units (after z-scoring both with
  training statistics);
* pairwise identification: per prediction, the fraction of distractor images whose
  truth is less correlated with the prediction than the correct image's truth
  (chance 0.5); by Euclidean distance: whose truth lies farther from the prediction;
* top-1 identification: whether the correct image's truth correlates best with the
  prediction among all candidates (chance 1/n);
* PixCorr: per image, Pearson r across pixels; RMSE: per image, root mean squared
  difference over pixels; SSIM: Wang et al. 2004 (Gaussian window 11, sigma 1.5) on
  luminance;
* single-trial reliability: per voxel, Pearson r across images between repetitions.
"""

from __future__ import annotations

import numpy as np


def _zscore_rows(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    return a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)


def corr_matrix(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(n_pred, n_true)`` Pearson r between rows of ``pred`` and rows of ``true``."""
    p = _zscore_rows(pred.reshape(len(pred), -1).astype(np.float64))
    t = _zscore_rows(true.reshape(len(true), -1).astype(np.float64))
    return p @ t.T


def profile_correlation(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-unit r across samples, ``(n_units,)``; inputs ``(n_samples, n_units)``."""
    p = pred - pred.mean(axis=0)
    t = true - true.mean(axis=0)
    denom = np.sqrt((p**2).sum(axis=0) * (t**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p * t).sum(axis=0) / denom


def pattern_correlation(pred: np.ndarray, true: np.ndarray, mean=None, std=None) -> np.ndarray:
    """Per-sample r across units, ``(n_samples,)``, after optional z-scoring by mean/std."""
    if mean is not None:
        pred = (pred - mean) / std
        true = (true - mean) / std
    return np.einsum("ij,ij->i", _zscore_rows(pred.astype(np.float64)), _zscore_rows(true.astype(np.float64)))


def pairwise_identification(pred: np.ndarray, true: np.ndarray, corr: np.ndarray | None = None) -> np.ndarray:
    """Per-prediction 2-way identification accuracy, ``(n,)``; row i of ``true`` is correct.

    ``corr`` may pass a precomputed ``corr_matrix(pred, true)`` (for chunked layers).
    """
    r = corr_matrix(pred, true) if corr is None else corr
    n = r.shape[0]
    correct = np.diag(r)[:, None]
    wins = (r < correct).sum(axis=1)
    return wins / (n - 1)


def euclidean_identification(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-prediction 2-way identification accuracy by Euclidean distance, ``(n,)``: the share of the other
    images whose truth lies farther from the prediction than row i of ``true`` does (chance 0.5)."""
    p = pred.reshape(len(pred), -1).astype(np.float64)
    t = true.reshape(len(true), -1).astype(np.float64)
    d2 = (p**2).sum(1)[:, None] - 2 * p @ t.T + (t**2).sum(1)[None, :]  # squared distances: same order
    n = d2.shape[0]
    return (d2 > np.diag(d2)[:, None]).sum(axis=1) / (n - 1)


def top1_hits(corr: np.ndarray) -> np.ndarray:
    """Per-image top-1 identification among all ``n`` candidates ``(n,)`` (1.0 or 0.0; chance 1/n) from a
    ``corr_matrix``: the correct image's truth correlates with the prediction more than every other's."""
    others = np.where(np.eye(len(corr), dtype=bool), -np.inf, corr)
    return (np.diag(corr) > others.max(axis=1)).astype(np.float64)


def rmse(recon: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image root mean squared difference over every pixel and channel, ``(n,)`` (in the images' units)."""
    d = recon.reshape(len(recon), -1).astype(np.float64) - true.reshape(len(true), -1).astype(np.float64)
    return np.sqrt((d**2).mean(axis=1))


def nway_hits(corr: np.ndarray, n_way: int, rng: np.random.Generator, draws: int = 20) -> np.ndarray:
    """Per-image n-way identification accuracy ``(n,)`` from a ``corr_matrix`` (chance 1/n_way):
    the share of ``draws`` random sets of ``n_way - 1`` distractors that the image beats."""
    n = corr.shape[0]
    hits = np.zeros((n, draws), dtype=bool)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        for d in range(draws):
            pick = rng.choice(others, n_way - 1, replace=False)
            hits[i, d] = corr[i, i] > corr[i, pick].max()
    return hits.mean(axis=1)


def nway_identification(corr: np.ndarray, n_way: int, rng: np.random.Generator, draws: int = 20) -> float:
    """Mean n-way identification accuracy over images (see ``nway_hits``)."""
    return float(np.mean(nway_hits(corr, n_way, rng, draws)))


LUMINANCE = (0.299, 0.587, 0.114)  # SSIM's luminance weights of R, G, B (ITU-R BT.601)
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # SSIM's constants for intensities in 0-1 (Wang et al. 2004)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_window(height: int, width: int) -> np.ndarray:
    """SSIM's 1-D Gaussian window (SD 1.5) for an image of ``height`` x ``width``: 11 pixels, or the largest
    odd size that fits a smaller image."""
    return _gaussian_window(min(11, height - (1 - height % 2), width - (1 - width % 2)))


def _filter2(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of ``(n, H, W)`` by the 1-D kernel ``g``."""
    from numpy.lib.stride_tricks import sliding_window_view

    tmp = np.einsum("nhwk,k->nhw", sliding_window_view(img, len(g), axis=2), g)
    return np.einsum("nhwk,k->nhw", sliding_window_view(tmp, len(g), axis=1), g)


def ssim(recon: np.ndarray, true: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-image SSIM on luminance of ``(n, 3, H, W)`` images in [0, data_range], ``(n,)``: Gaussian window of
    11 pixels (SD 1.5), or the largest odd window that fits a smaller image (10 x 10 sets)."""
    w = np.array(LUMINANCE)[None, :, None, None]
    x = (recon * w).sum(axis=1).astype(np.float64)
    y = (true * w).sum(axis=1).astype(np.float64)
    g = ssim_window(*x.shape[-2:])
    c1, c2 = SSIM_C1 * data_range**2, SSIM_C2 * data_range**2
    mx, my = _filter2(x, g), _filter2(y, g)
    sxx = _filter2(x * x, g) - mx**2
    syy = _filter2(y * y, g) - my**2
    sxy = _filter2(x * y, g) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(axis=(1, 2))


def single_trial_reliability(X: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Per-voxel r across images between repetitions, averaged over disjoint rep pairs.

    X: ``(n_trials, n_voxels)``; names: ``(n_trials,)`` stimulus of each trial. Images
    with fewer than two repetitions are ignored.
    """
    uniq, inverse = np.unique(names, return_inverse=True)
    rows_by_image = [r for r in (np.flatnonzero(inverse == k) for k in range(len(uniq))) if len(r) >= 2]
    if len(rows_by_image) < 3:
        return np.full(X.shape[1], np.nan)  # too few repeated images to estimate it
    n_reps = min(len(r) for r in rows_by_image)
    rs = []
    for a in range(0, n_reps - 1, 2):
        first = X[[r[a] for r in rows_by_image]]
        second = X[[r[a + 1] for r in rows_by_image]]
        rs.append(profile_correlation(first, second))
    return np.mean(rs, axis=0)


def summarise(values: np.ndarray) -> float:
    """Mean ignoring NaN (constant units give NaN correlations), as a plain float."""
    return float(np.nanmean(values))
