"""``pixel_ridge``, an honest baseline given the generator's care: ridge regression straight from voxels
to pixels.

* **Size, chosen by cross-validation on the training images.** The targets are the training images
  area-averaged to one of a few sizes (``eval.pixel_ridge_sizes``; by default the generator's
  ``image_size`` halved up to three times, at least 4 px); each size's ridge predicts every training
  image out of fold (image-grouped folds, stage 1's; the penalty chosen on the same folds, not nested:
  a slight optimism, alike for every size), brought back to the images' size, and the size whose
  predictions score best by ``eval.validation_metric`` (at the generator's size, in colour) fits the
  test images.
* **Contrast, chosen on the validation hold-out.** A ridge's predictions shrink toward the mean image
  (the generator's decoded inputs are rescaled to the training RMS for the same reason). The
  rescaled output ``mean + gain * (prediction - mean)``, with ``gain`` the RMS deviation from the
  mean image of the training images as the fitted size holds them (area-averaged to it and brought
  back) over that of the out-of-fold predictions, is used when it scores better by
  ``eval.validation_metric`` than the prediction as fitted on the held-out training images (never on
  test images); without a hold-out the prediction stays as fitted. Rescaling trades RMSE for
  contrast; the validation table then scores pixel ridge on the images its contrast was chosen on,
  as it scores the generator on the images its tick was chosen on.
* Same kernel ridge, z-scoring and cross-validated penalty as stage 1's feature decoders
  (``_voxel_ridge.py``), except that the penalty grid extends itself while the best penalty lies at
  an end of ``decoder.alphas`` (up to ``_voxel_ridge.MAX_EXTENSIONS`` steps per end, within
  ``ALPHA_MIN``-``ALPHA_MAX``; a limit reached is recorded as ``alpha_limit``). ``row()`` reports the penalty, the size, the gain used (1 = as fitted) and
  every score the choices compared; ``metrics.json`` keeps them beside the scores.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from shared import metrics as M
from shared.evaluation import at_size, validation_value
from stage2_generate.methods.base import Method, TestData, TrainData


def candidate_sizes(image_size: int, sizes: list[int] | tuple[int, ...] = ()) -> list[int]:
    """The sizes tried, ascending: ``sizes`` capped at ``image_size`` (never upsampled), or by default
    ``image_size`` halved up to three times (sizes below 4 px left out)."""
    if sizes:
        return sorted({min(int(s), image_size) for s in sizes})
    return sorted({image_size} | {image_size >> k for k in range(1, 4) if image_size >> k >= 4})


def selection_score(pred: np.ndarray, true: np.ndarray, metric: str) -> float:
    """Mean of ``metric`` (``eval.validation_metric``: ``pixcorr``, ``ssim`` or ``pixcorr_ssim``) of images
    ``pred`` against ``true``, both ``(n, C, S, S)`` in [0, 1]."""
    scores = {"pixcorr": M.summarise(M.pattern_correlation(pred.reshape(len(pred), -1), true.reshape(len(true), -1)))}
    if metric != "pixcorr":
        scores["ssim"] = M.summarise(M.ssim(pred, true))
    return validation_value(scores, metric)


class PixelMap:
    """A voxel ridge fitted to the training images' pixels at ``target`` px (at most their own size);
    ``predict`` gives images at the training images' size, ``mean + gain * (prediction - mean)``."""

    def __init__(self, ridge, train_images: np.ndarray, target: int):
        self.size = train_images.shape[-1]
        small = at_size(train_images, min(target, self.size))
        self.shape = small.shape[1:]
        self.fitted = ridge.fit(small.reshape(len(small), -1), extend=True)  # the grid grows past an end
        self.alpha = self.fitted.alpha
        self.mean = train_images.mean(axis=0)
        self.gain = 1.0

    def at_size(self, images: np.ndarray) -> np.ndarray:
        """``images`` as the fitted size can hold them: area-averaged to it and brought back."""
        return at_size(at_size(images, self.shape[-1]), self.size, clip=False)

    def _full(self, flat: np.ndarray) -> np.ndarray:
        return at_size(flat.reshape(len(flat), *self.shape).astype(np.float32), self.size, clip=False)

    def out_of_fold(self) -> np.ndarray | None:
        """The training images predicted out of fold, at their size, unclipped (None without folds)."""
        oof = self.fitted.out_of_fold()
        return None if oof is None else self._full(oof)

    def predict(self, X: np.ndarray, gain: float | None = None) -> np.ndarray:
        """Images ``(n, 3, size, size)`` in [0, 1] of voxel rows ``X`` ``(n, n_voxels)``; ``gain`` defaults
        to the chosen one."""
        pred = self._full(self.fitted.predict(X))
        g = self.gain if gain is None else gain
        return np.clip(self.mean + g * (pred - self.mean) if g != 1.0 else pred, 0, 1).astype(np.float32)


def fit_pixel_map(ridge, train_images: np.ndarray, sizes=(), metric: str = "pixcorr_ssim",
                  held: tuple[np.ndarray, Callable[[np.ndarray], float]] | None = None) -> tuple[PixelMap, dict]:
    """The ``PixelMap`` of the size that predicts the training images best out of fold, with its contrast
    gain chosen on ``held`` (voxel rows of the held-out images, and a function scoring their reconstructions;
    None: no hold-out, the prediction as fitted); and a record of the choices."""
    sizes = candidate_sizes(train_images.shape[-1], sizes)
    cv: dict[str, float] = {}
    pm, oof = None, None  # the best size's map and its out-of-fold predictions
    for s in sizes:
        candidate = PixelMap(ridge, train_images, s)
        predicted = candidate.out_of_fold()
        if predicted is None:  # no folds (decoder.cv_folds < 2): the largest size, nothing to choose with
            pm = candidate if s == sizes[-1] else PixelMap(ridge, train_images, sizes[-1])
            break
        cv[str(s)] = round(selection_score(np.clip(predicted, 0, 1), train_images, metric), 5)
        if pm is None or cv[str(s)] > cv[str(pm.shape[-1])]:  # ascending sizes: a tie keeps the smaller
            pm, oof = candidate, predicted
    best = pm.shape[-1]
    record: dict = {"size": best, "size_cv": cv, "metric": metric, "alpha_cv": pm.fitted.alpha_cv}
    if pm.fitted.alpha_limit:
        record["alpha_limit"] = pm.fitted.alpha_limit
    gain = 1.0
    if oof is not None:  # the spread a perfect fit at this size would have, over the out-of-fold predictions'
        reachable = pm.at_size(train_images) - pm.mean
        dev = oof - pm.mean
        gain = float(np.sqrt((reachable**2).mean() / max((dev**2).mean(), 1e-12)))
    if held is not None and gain != 1.0:
        X_held, score = held
        as_fitted, rescaled = score(pm.predict(X_held, 1.0)), score(pm.predict(X_held, gain))
        record["contrast_validation"] = {"as fitted": round(as_fitted, 5), f"x{gain:.3f}": round(rescaled, 5)}
        pm.gain = gain if rescaled > as_fitted else 1.0
        record["contrast"] = "rescaled" if pm.gain != 1.0 else "as fitted"
    else:
        record["contrast"] = "as fitted (no validation hold-out)" if held is None else "as fitted"
    record["gain"] = round(pm.gain, 5)
    return pm, record


def pixel_ridge(ridge, train_images: np.ndarray, tests: dict[str, np.ndarray], sizes=(),
                metric: str = "pixcorr_ssim", held=None) -> tuple[dict[str, np.ndarray], dict]:
    """Reconstructions ``{split: (n, 3, S, S)}`` from test voxels ``{split: (n, n_voxels)}`` and the record
    of the fit (penalty, size, contrast; ``fit_pixel_map``)."""
    pm, record = fit_pixel_map(ridge, train_images, sizes, metric, held)
    return {split: pm.predict(X) for split, X in tests.items()}, {"alpha": pm.alpha, **record}


class PixelRidge(Method):
    role = "baseline"
    reads = "voxels"
    describe = ("ridge from voxels to pixels (its size chosen by cross-validation on the training images, its "
                "penalty grid extended past its ends, its contrast chosen on the validation hold-out)")

    def fit(self, train: TrainData) -> PixelRidge:
        held = (train.held.voxels, train.held_score) if train.held is not None and train.held_score else None
        self.pixels, self.record = fit_pixel_map(train.ridge, self.ctx.train_images, self.ctx.pixel_ridge_sizes,
                                                 self.ctx.validation_metric, held)
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return self.pixels.predict(test.voxels)

    def row(self) -> dict:
        r = self.record
        return {"alpha": self.pixels.alpha, "pixel_size": r["size"], "contrast_gain": r["gain"],
                "choices": {k: v for k, v in r.items() if k not in ("size", "gain")}}
