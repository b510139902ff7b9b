"""The decoders of stage 1 behind one interface, for one (subject, ROI).

Each decoder is built from the z-scored training trials and test samples, then
decodes a layer chunk by chunk of units: ``decode(Yz_img, alpha)`` returns the test
predictions of every split and the out-of-fold predictions of the training images, in
the z-scored feature space. Kinds (``decoder.kind`` / ``alpha_per`` / ``backend``):

- ``DenseDecoder``: kernel ridge on every voxel (``shared.ridge``), one penalty per
  layer or per unit, both chosen by image-grouped cross-validation whose held-out
  predictions at the chosen penalty are the out-of-fold features.
- ``SparseDecoder``: voxel-selected ridge (``shared.sparse_ridge``, ours in torch, or
  the fastl2lir package itself), one penalty per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.ridge import ImageFolds, KernelRidge, best_alpha, cv_unit_scores, fold_hats, trials_to_images
from shared.sparse_ridge import SelectedRidge, fastl2lir_fit_predict


@dataclass
class ChunkResult:
    """Decoded z-scored features of one chunk of units.

    tests: ``{split: (n_test_images, n_units)}``; oof: ``(n_present_train_images,
    n_units)`` or None; alphas: ``(n_units,)`` penalty of each unit.
    """

    tests: dict[str, np.ndarray]
    oof: np.ndarray | None
    alphas: np.ndarray


def _cv_report(alphas: list[float], scores: np.ndarray) -> dict[str, float]:
    mean = [float(np.nanmean(s)) if not np.isnan(s).all() else float("nan") for s in scores]
    return {f"{a:g}": round(m, 4) for a, m in zip(alphas, mean)}


class DenseDecoder:
    """Dense kernel ridge; hats depend on voxels only and serve every layer."""

    def __init__(self, Xz: np.ndarray, tests: dict[str, np.ndarray], folds: ImageFolds, alphas: list[float],
                 per_unit: bool, device):
        self.ridge = KernelRidge(Xz, device)
        self.tests, self.folds, self.alphas, self.per_unit = tests, folds, list(alphas), per_unit
        self.E = trials_to_images(folds.trial_img, folds.n_images, self.ridge.device)
        self._test_hats: dict[float, dict[str, torch.Tensor]] = {}
        self.fold_hats = fold_hats(self.ridge, folds, self.alphas) if len(folds) else []

    def test_hats(self, alpha: float) -> dict[str, torch.Tensor]:
        """``{split: (n_test, n_images)}``; one Cholesky per penalty, shared by all layers."""
        if alpha not in self._test_hats:
            self._test_hats[alpha] = {s: self.ridge.hat(X, alpha) @ self.E for s, X in self.tests.items()}
        return self._test_hats[alpha]

    def choose_alpha(self, Yz_sample: np.ndarray) -> tuple[float | None, dict[str, float]]:
        """The layer's penalty from a sample of its units (None when chosen per unit)."""
        if self.per_unit or len(self.alphas) == 1:
            return (None if self.per_unit else self.alphas[0]), {}
        Y = torch.as_tensor(np.ascontiguousarray(Yz_sample), dtype=torch.float32, device=self.ridge.device)
        scores, _ = cv_unit_scores(self.fold_hats, self.folds, Y)
        return self.alphas[best_alpha(scores, per_unit=False)], _cv_report(self.alphas, scores)

    def decode(self, Yz_img: np.ndarray, alpha: float | None, oof: bool) -> tuple[ChunkResult, np.ndarray | None]:
        """Decode a chunk ``(n_images, n_units)``; also the CV scores ``(n_alphas, n_units)``
        when penalties are chosen per unit."""
        Y = torch.as_tensor(np.ascontiguousarray(Yz_img), dtype=torch.float32, device=self.ridge.device)
        n = Y.shape[1]
        scores = None
        if self.per_unit and len(self.alphas) > 1:
            scores, kept = cv_unit_scores(self.fold_hats, self.folds, Y, keep=oof)
            pick = best_alpha(scores, per_unit=True)
        else:
            kept = None
            pick = np.full(n, self.alphas.index(alpha) if alpha in self.alphas else 0)
        unit_alphas = np.array(self.alphas)[pick] if (self.per_unit or alpha is None) else np.full(n, alpha)
        tests = {s: np.empty((len(X), n), np.float32) for s, X in self.tests.items()}
        for a_idx in np.unique(pick):
            cols = torch.as_tensor(np.flatnonzero(pick == a_idx), device=Y.device)
            a = float(unit_alphas[cols[0].item()])
            for split, H in self.test_hats(a).items():
                tests[split][:, cols.cpu().numpy()] = (H @ Y[:, cols]).cpu().numpy()
        out_oof = None
        if oof:
            out_oof = np.empty((len(self.folds.present), n), np.float32)
            row = {img: i for i, img in enumerate(self.folds.present)}
            for k, held in enumerate(self.folds.held_images):
                rows = [row[i] for i in held]
                train_i = torch.as_tensor(self.folds.train_images(k), device=Y.device)
                for a_idx in np.unique(pick):
                    cols = np.flatnonzero(pick == a_idx)
                    if kept is not None:
                        pred = kept[k][a_idx][:, torch.as_tensor(cols, device=Y.device)]
                    else:
                        pred = self.fold_hats[k][a_idx] @ Y[train_i][:, torch.as_tensor(cols, device=Y.device)]
                    out_oof[np.ix_(rows, cols)] = pred.cpu().numpy()
        return ChunkResult(tests, out_oof, unit_alphas), scores


class SparseDecoder:
    """Voxel-selected ridge, ours (torch) or fastl2lir's, one penalty per layer."""

    def __init__(self, Xz: np.ndarray, tests: dict[str, np.ndarray], folds: ImageFolds, alphas: list[float],
                 n_voxels: int, backend: str, device):
        self.Xz, self.tests, self.folds, self.alphas = Xz, tests, folds, list(alphas)
        self.n_voxels, self.backend = n_voxels, backend
        self.device = torch.device(device)
        self.model = SelectedRidge(Xz, folds.trial_img, folds.n_images, folds, device) if backend == "torch" else None
        self.X_img_mean = np.stack([Xz[folds.trial_img == i].mean(0) if folds.counts[i] else np.zeros(Xz.shape[1])
                                    for i in range(folds.n_images)]).astype(np.float32)

    def _fold(self, Y: np.ndarray, alpha: float, k: int) -> np.ndarray:
        """Predictions of fold k's held-out images from its training trials."""
        held = self.folds.held_images[k]
        if self.model is not None:
            (pred,) = self.model.fit_predict(torch.as_tensor(Y, device=self.device), alpha, self.n_voxels,
                                             [torch.as_tensor(self.X_img_mean[held], device=self.device)], fold=k)
            return pred.cpu().numpy()
        tr = self.folds.train_trials(k)
        (pred,) = fastl2lir_fit_predict(self.Xz[tr], Y[self.folds.trial_img[tr]], alpha, self.n_voxels,
                                        [self.X_img_mean[held]])
        return pred

    def choose_alpha(self, Yz_sample: np.ndarray) -> tuple[float, dict[str, float]]:
        if len(self.alphas) == 1:
            return self.alphas[0], {}
        from shared.metrics import profile_correlation

        scores = np.zeros((len(self.alphas), Yz_sample.shape[1]))
        for a, alpha in enumerate(self.alphas):
            for k, held in enumerate(self.folds.held_images):
                scores[a] += profile_correlation(self._fold(Yz_sample, alpha, k), Yz_sample[held]) / len(self.folds)
        return self.alphas[best_alpha(scores, per_unit=False)], _cv_report(self.alphas, scores)

    def decode(self, Yz_img: np.ndarray, alpha: float, oof: bool) -> tuple[ChunkResult, None]:
        Y = np.ascontiguousarray(Yz_img, dtype=np.float32)
        names = list(self.tests)
        if self.model is not None:
            preds = self.model.fit_predict(torch.as_tensor(Y, device=self.device), alpha, self.n_voxels,
                                           [torch.as_tensor(self.tests[s], device=self.device) for s in names])
            preds = [p.cpu().numpy() for p in preds]
        else:
            preds = fastl2lir_fit_predict(self.Xz, Y[self.folds.trial_img], alpha, self.n_voxels,
                                          [self.tests[s] for s in names])
        out_oof = None
        if oof:
            out_oof = np.empty((len(self.folds.present), Y.shape[1]), np.float32)
            row = {img: i for i, img in enumerate(self.folds.present)}
            for k, held in enumerate(self.folds.held_images):
                out_oof[[row[i] for i in held]] = self._fold(Y, alpha, k)
        return ChunkResult(dict(zip(names, preds)), out_oof, np.full(Y.shape[1], alpha)), None


def make_decoder(kind: str, alpha_per: str, backend: str, n_voxels: int, alphas: list[float], Xz: np.ndarray,
                 tests: dict[str, np.ndarray], folds: ImageFolds, device):
    """The decoder that ``decoder.kind``/``alpha_per``/``backend`` name."""
    if kind == "sparse":
        return SparseDecoder(Xz, tests, folds, alphas, n_voxels, backend, device)
    return DenseDecoder(Xz, tests, folds, alphas, alpha_per == "unit", device)
