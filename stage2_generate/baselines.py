"""Honest baselines beside every reconstruction.

* ``pixel_ridge``: ridge regression straight from voxels to pixels at
  ``eval.pixel_ridge_size`` (same kernel ridge, z-scoring and cross-validated penalty as
  stage 1's feature decoders).
* ``nearest_train``: the training image whose true conditioning features correlate
  best with the decoded ones (retrieval from a gallery, no generation).
"""

from __future__ import annotations

import numpy as np
import torch

from shared.config import Config
from shared.datasets import SplitData
from shared.ridge import KernelRidge, Standardiser, select_alpha, trials_to_images


def pixel_ridge(cfg: Config, train: SplitData, train_names: list[str], train_images: np.ndarray,
                tests: dict[str, np.ndarray], device) -> tuple[dict[str, np.ndarray], float]:
    """Reconstructions ``{split: (n, 3, S, S)}`` from test voxels ``{split: (n, n_voxels)}``.

    The regression targets the images at ``eval.pixel_ridge_size``; predictions are
    upsampled to the size of ``train_images``. The penalty is chosen by image-grouped
    cross-validation on a sample of ``decoder.cv_units`` pixels.
    """
    size = train_images.shape[-1]
    small = torch.nn.functional.interpolate(torch.from_numpy(train_images), size=cfg.eval.pixel_ridge_size,
                                            mode="area").numpy()
    x_std = Standardiser().fit(train.X)
    ridge = KernelRidge(x_std.transform(train.X), device)
    index = {n: i for i, n in enumerate(train_names)}
    trial_img = np.array([index[n] for n in train.names])
    Y = small.reshape(len(small), -1)
    y_std = Standardiser().fit(Y[trial_img])
    Yz = y_std.transform(Y)
    sample = np.random.default_rng(cfg.seed).choice(Yz.shape[1], min(cfg.decoder.cv_units, Yz.shape[1]), replace=False)
    alpha, _ = select_alpha(ridge, trial_img, Yz[:, np.sort(sample)], cfg.decoder.alphas, cfg.decoder.cv_folds, cfg.seed)
    E = trials_to_images(trial_img, len(train_names), ridge.device)
    Yt = torch.as_tensor(Yz, device=ridge.device)
    out = {}
    for split, X in tests.items():
        pred = ((ridge.hat(x_std.transform(X), alpha) @ E) @ Yt).cpu().numpy()
        pred = torch.from_numpy(y_std.inverse(pred).reshape(len(X), *small.shape[1:]))
        pred = torch.nn.functional.interpolate(pred, size=size, mode="bilinear", align_corners=False)
        out[split] = np.clip(pred.numpy(), 0, 1)
    return out, alpha


class NearestTrain:
    """For each decoded sample, the training image whose true conditioning features
    correlate best with the decoded ones; the gallery is z-scored once."""

    def __init__(self, train_inputs: list[np.ndarray], train_images: np.ndarray):
        flat = np.concatenate([x.reshape(len(x), -1) for x in train_inputs], axis=1)
        self.gallery = self._normalise(torch.from_numpy(flat))
        self.images = train_images

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        x = x.double() - x.double().mean(dim=1, keepdim=True)
        return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()

    def __call__(self, decoded: list[np.ndarray]) -> np.ndarray:
        flat = np.concatenate([x.reshape(len(x), -1) for x in decoded], axis=1)
        best = (self._normalise(torch.from_numpy(flat)) @ self.gallery.T).argmax(dim=1).numpy()
        return self.images[best]
