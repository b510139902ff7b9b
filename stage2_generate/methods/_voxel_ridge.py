"""The voxel ridge every voxel method shares: one subject's and ROI's training trials to any
per-image targets (pixels for ``pixel_ridge``, latent codes for ``latent_regression`` and ``vae``;
``end_to_end`` trains on its z-scored trials)."""

from __future__ import annotations

import numpy as np
import torch

from shared.config import DecoderConfig
from shared.datasets import SplitData
from shared.ridge import ImageFolds, KernelRidge, Standardiser, fold_hats, select_alpha, trials_to_images


class VoxelRidge:
    """Ridge from one subject's and ROI's training trials to any per-image targets.

    The voxels are z-scored with the training trials' statistics and their kernel is
    computed once; ``fit`` regresses targets ``(n_images, k)`` (each trial gets its image's
    row), z-scored, with the penalty chosen among ``decoder.alphas`` by image-grouped
    cross-validation on a sample of ``decoder.cv_units`` targets, as stage 1 decodes features.
    Equals scikit-learn's ``Ridge(alpha)`` with an intercept on the z-scored trials.
    """

    def __init__(self, decoder: DecoderConfig, seed: int, train: SplitData, train_names: list[str], device):
        """``decoder``: the decoder section (penalties, folds, CV units); ``seed``: the experiment's."""
        self.decoder, self.seed = decoder, seed
        self.x_std = Standardiser().fit(train.X)
        self.Xz = self.x_std.transform(train.X)  # the z-scored training trials (the methods train on them too)
        self.ridge = KernelRidge(self.Xz, device)
        index = {n: i for i, n in enumerate(train_names)}
        self.trial_img = np.array([index[n] for n in train.names])
        self.n_images = len(train_names)
        self.E = trials_to_images(self.trial_img, self.n_images, self.ridge.device)

    def fit(self, Y: np.ndarray, alphas: list[float] | None = None) -> FittedRidge:
        """Ridge to ``Y`` ``(n_images, k)``; ``alphas`` default to ``decoder.alphas``."""
        c = self.decoder
        y_std = Standardiser().fit(Y[self.trial_img])
        Yz = y_std.transform(Y)
        sample = np.random.default_rng(self.seed).choice(Yz.shape[1], min(c.cv_units, Yz.shape[1]), replace=False)
        alpha, _ = select_alpha(self.ridge, self.trial_img, Yz[:, np.sort(sample)], alphas or c.alphas, c.cv_folds,
                                self.seed)
        return FittedRidge(self, y_std, torch.as_tensor(Yz, device=self.ridge.device), float(alpha))


class FittedRidge:
    """A ``VoxelRidge`` fitted to one set of targets: ``predict`` and the explicit ``coef``."""

    def __init__(self, vr: VoxelRidge, y_std: Standardiser, Yz: torch.Tensor, alpha: float):
        self.vr, self.y_std, self.Yz, self.alpha = vr, y_std, Yz, alpha

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets ``(n, k)`` of voxel rows ``X`` ``(n, n_voxels)`` (raw, not z-scored)."""
        vr = self.vr
        return self.y_std.inverse(((vr.ridge.hat(vr.x_std.transform(X), self.alpha) @ vr.E) @ self.Yz).cpu().numpy())

    def out_of_fold(self) -> np.ndarray | None:
        """Each training image's targets ``(n_images, k)`` predicted by a ridge fitted without its trials (the
        image-grouped folds the penalty was chosen on, at the chosen penalty; raw units), or None when
        ``decoder.cv_folds`` gives no folds. Each fold's ridge keeps the voxels' z-scoring over all training
        trials and centres the targets on its own trials, as stage 1's out-of-fold features do; unlike them,
        the penalty is not chosen again inside each fold (not nested: cheap, slightly optimistic)."""
        vr = self.vr
        folds = ImageFolds(vr.trial_img, vr.n_images, vr.decoder.cv_folds, vr.seed)
        if not len(folds):
            return None
        out = torch.zeros_like(self.Yz)
        dev = self.Yz.device
        for k, (H,) in enumerate(fold_hats(vr.ridge, folds, [self.alpha])):
            out[torch.as_tensor(folds.held_images[k], device=dev)] = \
                H @ self.Yz[torch.as_tensor(folds.train_images(k), device=dev)]
        return self.y_std.inverse(out.cpu().numpy())

    def coef(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)``: predictions are ``x_std.transform(X) @ W + b`` (``W`` ``(n_voxels, k)``)."""
        W = (self.vr.ridge.coef_map(self.alpha) @ (self.vr.E @ self.Yz)).cpu().numpy()
        return W * self.y_std.std_, self.y_std.mean_.copy()
