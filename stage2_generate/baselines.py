"""Honest baselines beside every reconstruction, and the voxel ridge they share with the methods.

* ``pixel_ridge``: ridge regression straight from voxels to pixels at
  ``eval.pixel_ridge_size``, never above the images' own size (same kernel ridge, z-scoring and cross-validated penalty as
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


class VoxelRidge:
    """Ridge from one subject's and ROI's training trials to any per-image targets.

    The voxels are z-scored with the training trials' statistics and their kernel is
    computed once; ``fit`` regresses targets ``(n_images, k)`` (each trial gets its image's
    row), z-scored, with the penalty chosen among ``decoder.alphas`` by image-grouped
    cross-validation on a sample of ``decoder.cv_units`` targets, as stage 1 decodes features.
    Equals scikit-learn's ``Ridge(alpha)`` with an intercept on the z-scored trials.
    """

    def __init__(self, cfg: Config, train: SplitData, train_names: list[str], device):
        self.cfg = cfg
        self.x_std = Standardiser().fit(train.X)
        self.Xz = self.x_std.transform(train.X)  # the z-scored training trials (the methods train on them too)
        self.ridge = KernelRidge(self.Xz, device)
        index = {n: i for i, n in enumerate(train_names)}
        self.trial_img = np.array([index[n] for n in train.names])
        self.n_images = len(train_names)
        self.E = trials_to_images(self.trial_img, self.n_images, self.ridge.device)

    def fit(self, Y: np.ndarray, alphas: list[float] | None = None) -> FittedRidge:
        """Ridge to ``Y`` ``(n_images, k)``; ``alphas`` default to ``decoder.alphas``."""
        c = self.cfg.decoder
        y_std = Standardiser().fit(Y[self.trial_img])
        Yz = y_std.transform(Y)
        sample = np.random.default_rng(self.cfg.seed).choice(Yz.shape[1], min(c.cv_units, Yz.shape[1]), replace=False)
        alpha, _ = select_alpha(self.ridge, self.trial_img, Yz[:, np.sort(sample)], alphas or c.alphas, c.cv_folds,
                                self.cfg.seed)
        return FittedRidge(self, y_std, torch.as_tensor(Yz, device=self.ridge.device), float(alpha))


class FittedRidge:
    """A ``VoxelRidge`` fitted to one set of targets: ``predict`` and the explicit ``coef``."""

    def __init__(self, vr: VoxelRidge, y_std: Standardiser, Yz: torch.Tensor, alpha: float):
        self.vr, self.y_std, self.Yz, self.alpha = vr, y_std, Yz, alpha

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets ``(n, k)`` of voxel rows ``X`` ``(n, n_voxels)`` (raw, not z-scored)."""
        vr = self.vr
        return self.y_std.inverse(((vr.ridge.hat(vr.x_std.transform(X), self.alpha) @ vr.E) @ self.Yz).cpu().numpy())

    def coef(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)``: predictions are ``x_std.transform(X) @ W + b`` (``W`` ``(n_voxels, k)``)."""
        W = (self.vr.ridge.coef_map(self.alpha) @ (self.vr.E @ self.Yz)).cpu().numpy()
        return W * self.y_std.std_, self.y_std.mean_.copy()


def pixel_ridge(cfg: Config, vr: VoxelRidge, train_images: np.ndarray,
                tests: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """Reconstructions ``{split: (n, 3, S, S)}`` from test voxels ``{split: (n, n_voxels)}``.

    The regression targets the images at ``eval.pixel_ridge_size`` or at their own size
    (``generator.image_size``) when that is smaller (never upsampled); predictions are brought
    to the size of ``train_images``.
    """
    size = train_images.shape[-1]
    target = min(cfg.eval.pixel_ridge_size, size)
    small = torch.nn.functional.interpolate(torch.from_numpy(train_images), size=target, mode="area").numpy()
    fit = vr.fit(small.reshape(len(small), -1))
    out = {}
    for split, X in tests.items():
        pred = torch.from_numpy(fit.predict(X).reshape(len(X), *small.shape[1:]))
        pred = torch.nn.functional.interpolate(pred, size=size, mode="bilinear", align_corners=False)
        out[split] = np.clip(pred.numpy(), 0, 1)
    return out, fit.alpha


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
