"""The voxel ridge every voxel method shares: one subject's and ROI's training trials to any
per-image targets (pixels for ``pixel_ridge``, latent codes for ``latent_regression`` and ``vae``;
``end_to_end`` trains on its z-scored trials)."""

from __future__ import annotations

import numpy as np
import torch

from shared.config import DecoderConfig
from shared.datasets import SplitData
from shared.ridge import (ImageFolds, KernelRidge, Standardiser, cv_unit_scores, fold_hats, mean_scores, search_alpha,
                          trials_to_images)


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
        self.folds = ImageFolds(self.trial_img, self.n_images, decoder.cv_folds, seed)
        self._hats: dict[tuple, list] = {}  # penalties -> held-out hat matrices of every fold

    def hats(self, alphas: list[float]) -> list[list[torch.Tensor]]:
        """``fold_hats`` of the folds at ``alphas``: they depend on the voxels alone, so every target the ridge
        is fitted to (pixels at each size, latent codes) shares them."""
        key = tuple(alphas)
        if key not in self._hats:
            self._hats[key] = fold_hats(self.ridge, self.folds, list(alphas))
        return self._hats[key]

    def fit(self, Y: np.ndarray, alphas: list[float] | None = None, extend: bool = False) -> FittedRidge:
        """Ridge to ``Y`` ``(n_images, k)``; ``alphas`` default to ``decoder.alphas`` (the penalty with the best
        held-out mean profile correlation on a sample of units, as ``shared.ridge.select_alpha`` chooses).

        ``extend``: while the best penalty lies at an end of the grid, try the next one beyond it (the grid's
        own step at that end, at least x10), up to ``shared.ridge.MAX_EXTENSIONS`` times per end and within
        [``ALPHA_MIN``, ``ALPHA_MAX``] (``shared.ridge.search_alpha``); the fitted ridge's ``alpha_cv`` lists every penalty tried and its
        score, and ``alpha_limit`` says when a limit stopped the search at an end."""
        c = self.decoder
        alphas = sorted(float(a) for a in (alphas or c.alphas))
        y_std = Standardiser().fit(Y[self.trial_img])
        Yz = y_std.transform(Y)
        alpha, tried, limit = alphas[0], {}, None
        if len(alphas) > 1:
            sample = np.random.default_rng(self.seed).choice(Yz.shape[1], min(c.cv_units, Yz.shape[1]), replace=False)
            Ys = torch.as_tensor(np.ascontiguousarray(Yz[:, np.sort(sample)]), dtype=torch.float32,
                                 device=self.ridge.device)
            alpha, tried, limit = search_alpha(
                lambda grid: mean_scores(cv_unit_scores(self.hats(grid), self.folds, Ys)[0]), alphas, extend)
        fitted = FittedRidge(self, y_std, torch.as_tensor(Yz, device=self.ridge.device), float(alpha))
        fitted.alpha_cv = {f"{a:g}": round(float(v), 5) for a, v in sorted(tried.items())}
        fitted.alpha_limit = limit
        return fitted


class FittedRidge:
    """A ``VoxelRidge`` fitted to one set of targets: ``predict`` and the explicit ``coef``."""

    def __init__(self, vr: VoxelRidge, y_std: Standardiser, Yz: torch.Tensor, alpha: float):
        self.vr, self.y_std, self.Yz, self.alpha = vr, y_std, Yz, alpha
        self.alpha_cv: dict[str, float] = {}  # every penalty tried -> its CV score (set by ``VoxelRidge.fit``)
        self.alpha_limit: str | None = None  # why an extended grid stopped at an end, if it did

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
        folds = vr.folds
        if not len(folds):
            return None
        alphas = sorted(float(a) for a in vr.decoder.alphas)
        alphas = alphas if self.alpha in alphas else [self.alpha]  # an extended grid's penalty: its own hats
        at = alphas.index(self.alpha)
        out = torch.zeros_like(self.Yz)
        dev = self.Yz.device
        for k, by_alpha in enumerate(vr.hats(alphas)):
            out[torch.as_tensor(folds.held_images[k], device=dev)] = \
                by_alpha[at] @ self.Yz[torch.as_tensor(folds.train_images(k), device=dev)]
        return self.y_std.inverse(out.cpu().numpy())

    def coef(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)``: predictions are ``x_std.transform(X) @ W + b`` (``W`` ``(n_voxels, k)``)."""
        W = (self.vr.ridge.coef_map(self.alpha) @ (self.vr.E @ self.Yz)).cpu().numpy()
        return W * self.y_std.std_, self.y_std.mean_.copy()
