"""``pixel_ridge``, an honest baseline given the generator's care: ridge regression straight from voxels
to pixels.

* **Stage 1's decoded pixels, when it decoded them.** With ``pixels<N>`` layers in ``features.layers``,
  pixel ridge is those layers: stage 1's decoders (the same penalty search, folds and out-of-fold
  predictions as every layer's) decode the stimulus at each ``N``, and pixel ridge brings the decoded
  image to the generator's size (``evaluation.at_size``, unclipped, as ``generator.start: decoded_pixels``
  does), so the baseline and the generator's low-level input are one computation. The ``N`` whose
  out-of-fold predictions score best by ``eval.validation_metric`` reconstructs (ties: the smaller; without
  out-of-fold predictions, the largest ``N``), and the contrast is chosen as below. Without a pixels layer
  pixel ridge fits its own ridge, as follows.
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
  an end of ``decoder.alphas`` (up to ``shared.ridge.MAX_EXTENSIONS`` steps per end, within
  ``ALPHA_MIN``-``ALPHA_MAX``; a limit reached is recorded as ``alpha_limit``). ``row()`` reports the penalty, the size, the gain used (1 = as fitted) and
  every score the choices compared; ``metrics.json`` keeps them beside the scores.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from shared import metrics as M
from shared.evaluation import at_size, validation_value
from shared.holdout import HELD_OUT, VALIDATION
from shared.layers import is_pixels, pixels_side
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
        return with_gain(self._full(self.fitted.predict(X)), self.mean, self.gain if gain is None else gain)


class DecodedPixels:
    """Stage 1's decoded ``pixels<N>`` layer of one subject and ROI as images at the training images' size, with
    ``PixelMap``'s interface (``predict`` takes the store split and the image names instead of voxels)."""

    def __init__(self, store, subject: str, roi: str, layer: str, train_images: np.ndarray, train_names: list[str]):
        self.store, self.subject, self.roi, self.layer = store, subject, roi, layer
        self.size = train_images.shape[-1]
        side = pixels_side(layer)
        self.shape = (train_images.shape[1], side, side)
        self.train_names = train_names
        self.mean = train_images.mean(axis=0)
        self.gain = 1.0
        with store.open_decoded(subject, roi, layer, _any_split(store, subject, roi, layer)) as arr:
            self.alpha = arr.attrs.get("alpha")

    def at_size(self, images: np.ndarray) -> np.ndarray:
        return at_size(at_size(images, self.shape[-1]), self.size, clip=False)

    def images(self, split: str, names: list[str]) -> np.ndarray:
        """The decoded images of ``names`` in store split ``split``, at the training images' size, unclipped."""
        return decoded_pixel_images(self.store, self.subject, self.roi, self.layer, split, names, self.size)

    def out_of_fold(self) -> np.ndarray | None:
        if not self.store.decoded_file(self.subject, self.roi, self.layer, "train_oof").is_file():
            return None
        return self.images("train_oof", self.train_names)

    def predict(self, where: tuple[str, list[str]], gain: float | None = None) -> np.ndarray:
        g = self.gain if gain is None else gain
        return with_gain(self.images(*where), self.mean, g)


def _any_split(store, subject, roi, layer) -> str:
    """A store split holding the decoded layer (for its attributes): the first test set's or the out-of-fold."""
    for split in store.cfg.data.test:
        if store.decoded_file(subject, roi, layer, split).is_file():
            return split
    return "train_oof"


def decoded_pixel_images(store, subject: str, roi: str, layer: str, split: str, names: list[str],
                         size: int) -> np.ndarray:
    """Stage 1's decoded ``pixels<N>`` rows of ``names`` as images ``(n, 3, size, size)``, brought to ``size`` by
    ``evaluation.at_size`` (unclipped; a grayscale layer's channel repeated)."""
    with store.open_decoded(subject, roi, layer, split) as arr:
        x = arr.read(arr.rows_for(names)).reshape(len(names), *arr.unit_shape).astype(np.float32)
    x = at_size(x, size, clip=False)
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x


def with_gain(pred: np.ndarray, mean: np.ndarray, gain: float) -> np.ndarray:
    """``mean + gain * (pred - mean)`` in [0, 1] (``pred`` itself, clipped, at gain 1)."""
    return np.clip(mean + gain * (pred - mean) if gain != 1.0 else pred, 0, 1).astype(np.float32)


def fit_pixel_map(ridge, train_images: np.ndarray, sizes=(), metric: str = "pixcorr_ssim",
                  held: tuple[np.ndarray, Callable[[np.ndarray], float]] | None = None) -> tuple[PixelMap, dict]:
    """The ``PixelMap`` of the size that predicts the training images best out of fold, with its contrast
    gain chosen on ``held`` (voxel rows of the held-out images, and a function scoring their reconstructions;
    None: no hold-out, the prediction as fitted); and a record of the choices."""
    sizes = candidate_sizes(train_images.shape[-1], sizes)
    return choose_map([lambda s=s: PixelMap(ridge, train_images, s) for s in sizes], train_images, metric, held)


def choose_map(candidates: list, train_images: np.ndarray, metric: str, held=None) -> tuple:
    """The candidate map (built by each of ``candidates``, ascending size) whose out-of-fold predictions score
    best by ``metric``, with its contrast gain chosen on ``held`` (what its ``predict`` takes for the held-out
    images, and a function scoring their reconstructions); and a record of the choices."""
    cv: dict[str, float] = {}
    pm, oof = None, None  # the best size's map and its out-of-fold predictions
    for k, build in enumerate(candidates):
        candidate = build()
        predicted = candidate.out_of_fold()
        if predicted is None:  # no folds (decoder.cv_folds < 2): the largest size, nothing to choose with
            pm = candidate if k == len(candidates) - 1 else candidates[-1]()
            break
        cv[str(candidate.shape[-1])] = round(selection_score(np.clip(predicted, 0, 1), train_images, metric), 5)
        if pm is None or cv[str(candidate.shape[-1])] > cv[str(pm.shape[-1])]:  # ascending: a tie keeps the smaller
            pm, oof = candidate, predicted
    best = pm.shape[-1]
    record: dict = {"size": best, "size_cv": cv, "metric": metric}
    fitted = getattr(pm, "fitted", None)
    if fitted is not None:
        record["alpha_cv"] = fitted.alpha_cv
        if fitted.alpha_limit:
            record["alpha_limit"] = fitted.alpha_limit
    else:
        record["source"] = f"stage 1's decoded {pm.layer}"
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
    describe = ("ridge from voxels to pixels (stage 1's decoded pixels layers when it decoded them, else its own "
                "ridge; the size chosen by cross-validation on the training images, the penalty grid extended past "
                "its ends, the contrast chosen on the validation hold-out)")

    @classmethod
    def store_layers(cls, methods, features) -> list[str]:
        return sorted((la for la in features.layers if is_pixels(la)), key=pixels_side)

    @property
    def pixel_layers(self) -> list[str]:
        """The ``pixels<N>`` layers stage 1 decoded, ascending ``N``."""
        return self.store_layers(self.ctx.methods, self.ctx.features)

    def fit(self, train: TrainData) -> PixelRidge:
        """Fit to ``train`` once: the blend (``wgan_gp_blend``) and the baseline, handed the same ``TrainData``, share
        the fit (the run keeps the last one)."""
        last = self.ctx.shared("pixel_ridge fit", dict)
        if last.get("train") is not train:
            last.clear()
            last.update(train=train, fit=self._fit(train))
        self.pixels, self.record = last["fit"]
        return self

    def _fit(self, train: TrainData) -> tuple:
        c = self.ctx
        if self.pixel_layers:
            held = ((VALIDATION, train.held.names), train.held_score) \
                if train.held is not None and train.held_score else None
            candidates = [lambda la=la: DecodedPixels(c.store, train.subject, train.roi, la, c.train_images,
                                                      c.train_names) for la in self.pixel_layers]
            return choose_map(candidates, c.train_images, c.validation_metric, held)
        held = (train.held.voxels, train.held_score) if train.held is not None and train.held_score else None
        return fit_pixel_map(train.ridge, c.train_images, c.pixel_ridge_sizes, c.validation_metric, held)

    def reconstruct(self, test: TestData) -> np.ndarray:
        if isinstance(self.pixels, DecodedPixels):
            return self.pixels.predict((VALIDATION if test.split == HELD_OUT else test.split, test.names))
        return self.pixels.predict(test.voxels)

    def row(self) -> dict:
        r = self.record
        return {"alpha": self.pixels.alpha, "pixel_size": r["size"], "contrast_gain": r["gain"],
                "choices": {k: v for k, v in r.items() if k not in ("size", "gain")}}
