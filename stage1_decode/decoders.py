"""The decoders of stage 1 behind one interface, for one (subject, ROI).

Each decoder is built from the z-scored training trials and test samples. For a layer,
``choose`` picks the penalties from a sample of its units: one for the test predictions
(cross-validated over image-grouped folds of all training trials) and one per fold for
the out-of-fold predictions (nested: cross-validated within that fold's training images
only, so no feature of a held-out image enters its prediction, not even through the
penalty). Then ``decode`` takes the layer chunk by chunk of units and returns the test
predictions of every split and the out-of-fold predictions of the training images, in
the z-scored feature space. Kinds (``decoder.kind`` / ``alpha_per`` / ``backend``):

- ``DenseDecoder``: kernel ridge on every voxel (``shared.ridge``), one penalty per layer
  or per unit (then chosen for every unit of every chunk, the same nested way).
- ``SparseDecoder``: voxel-selected ridge (``shared.sparse_ridge``, ours in torch, or the
  fastl2lir package itself), one penalty per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from shared.metrics import profile_correlation
from shared.ridge import (ALPHA_MAX, ImageFolds, KernelRidge, best_alpha, cv_unit_scores, fold_hats, mean_scores,
                          search_alpha, trials_to_images)
from shared.sparse_ridge import SelectedRidge, fastl2lir_fit_predict


@dataclass
class Choice:
    """Penalties of one layer: ``alpha`` for the test predictions and ``fold_alphas[k]``
    for the out-of-fold rows of fold k (None: chosen per unit while decoding);
    ``report``: mean cross-validated profile correlation of each penalty."""

    alpha: float | None
    fold_alphas: list = field(default_factory=list)
    report: dict[str, float] = field(default_factory=dict)


@dataclass
class ChunkResult:
    """Decoded z-scored features of one chunk of units.

    tests: ``{split: (n_test_images, n_units)}``; oof: ``(n_present_train_images,
    n_units)`` (rows in ``folds.present`` order) or None; alphas: ``(n_units,)``
    penalty of each unit's test predictions; scores: ``(n_alphas, n_units)`` CV scores
    when penalties are chosen per unit, else None.
    """

    tests: dict[str, np.ndarray]
    oof: np.ndarray | None
    alphas: np.ndarray
    scores: np.ndarray | None = None


def _choice(scores, alphas: list[float], n_oof_folds: int, extend: bool) -> Choice:
    """The layer's penalty chosen on the outer folds and, for the out-of-fold rows, inside each of the first
    ``n_oof_folds`` folds; ``scores(k, grid)`` gives ``(len(grid), n_units)`` held-out scores of the outer folds
    (``k`` None) or of those inside fold k. ``extend``: each choice searches past the grid's ends while its best
    penalty lies there (``shared.ridge.search_alpha``: the inner choices search on their own folds, so no
    held-out image shapes its own penalty, not even through the grid); else the grid's best, ties to the first."""
    if not extend:
        outer = scores(None, alphas)
        fold_alphas = [alphas[best_alpha(scores(k, alphas), per_unit=False)] for k in range(n_oof_folds)]
        return Choice(alphas[best_alpha(outer, per_unit=False)], fold_alphas, _report(alphas, outer))
    alpha, tried, _ = search_alpha(lambda grid: mean_scores(scores(None, grid)), alphas)
    fold_alphas = [search_alpha(lambda grid, k=k: mean_scores(scores(k, grid)), alphas)[0] for k in range(n_oof_folds)]
    return Choice(alpha, fold_alphas, {f"{a:g}": round(float(v), 4) for a, v in sorted(tried.items())})


def _report(alphas: list[float], scores: np.ndarray) -> dict[str, float]:
    valid = ~np.isnan(scores)
    mean = np.where(valid, scores, 0).sum(1) / np.maximum(valid.sum(1), 1)
    return {f"{a:g}": round(float(m), 4) for a, m in zip(alphas, mean)}


def weak_decoding(choice: Choice, alphas: list[float], extended: bool = False) -> str:
    """Why a layer's decoding carries little, in words ('' when it does not, or its penalties are per unit): its best
    cross-validated profile correlation is not above 0, or its penalty is the largest it could be (of ``alphas``;
    ``extended``: of the grid grown to ``shared.ridge.ALPHA_MAX``), where every prediction shrinks towards the
    training mean (and out-of-fold rows then correlate negatively with their images)."""
    if choice.alpha is None:
        return ""
    best = max(choice.report.values(), default=None)
    if best is not None and best <= 0:
        return (f"no penalty decodes it (best cross-validated profile r {best:+.3f}): the voxels carry little of "
                f"this layer, so its decoded features are close to the training mean (check the single-trial "
                f"reliability above; average more repeats, or use another ROI)")
    top = ALPHA_MAX if extended else max(alphas) if len(alphas) > 1 else None
    if top is not None and choice.alpha >= top:
        return (f"the penalty is the largest it can be ({choice.alpha:g}), so the decoder predicts little more than "
                f"the training mean; add larger penalties to decoder.alphas, or check the voxels' reliability")
    return ""


class DenseDecoder:
    """Dense kernel ridge; its hat matrices depend on voxels only and serve every layer."""

    def __init__(self, Xz: np.ndarray, tests: dict[str, np.ndarray], folds: ImageFolds, alphas: list[float],
                 per_unit: bool, device):
        self.ridge = KernelRidge(Xz, device)
        self.tests, self.folds, self.alphas = tests, folds, list(alphas)
        self.per_unit = per_unit and len(self.alphas) > 1
        self.E = trials_to_images(folds.trial_img, folds.n_images, self.ridge.device)
        self._test_hats: dict[float, dict[str, torch.Tensor]] = {}
        self._fold_hats: dict[int | None, dict[float, list]] = {}  # outer folds (None) or inside fold k -> alpha -> hats
        self._inner_folds: dict[int, ImageFolds] = {}
        self.hats = self.fold_hats(None, self.alphas) if len(folds) else []

    def test_hats(self, alpha: float) -> dict[str, torch.Tensor]:
        """``{split: (n_test, n_images)}``; one Cholesky per penalty, shared by all layers."""
        if alpha not in self._test_hats:
            self._test_hats[alpha] = {s: self.ridge.hat(X, alpha) @ self.E for s, X in self.tests.items()}
        return self._test_hats[alpha]

    def folds_of(self, k: int | None) -> ImageFolds:
        """The outer folds (``k`` None) or the folds within outer fold k's training trials (made once)."""
        if k is None:
            return self.folds
        if k not in self._inner_folds:
            self._inner_folds[k] = self.folds.inner(k)
        return self._inner_folds[k]

    def fold_hats(self, k: int | None, alphas: list[float]) -> list[list[torch.Tensor]]:
        """``shared.ridge.fold_hats`` ``[fold][alpha]`` of ``folds_of(k)`` at ``alphas``, each penalty's made once."""
        folds, cache = self.folds_of(k), self._fold_hats.setdefault(k, {})
        missing = [a for a in alphas if a not in cache]
        if missing:
            for a, per_fold in zip(missing, zip(*fold_hats(self.ridge, folds, missing))):
                cache[a] = list(per_fold)
        return [[cache[a][j] for a in alphas] for j in range(len(folds))]

    def inner(self, k: int) -> tuple[ImageFolds, list]:
        """Folds within outer fold k's training trials and their hats at ``alphas``."""
        return self.folds_of(k), self.fold_hats(k, self.alphas)

    def _tensor(self, Y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(Y), dtype=torch.float32, device=self.ridge.device)

    def choose(self, Yz_sample: np.ndarray, oof: bool, extend: bool = False) -> Choice:
        if self.per_unit:
            return Choice(None, [None] * len(self.folds))
        if len(self.alphas) == 1:
            return Choice(self.alphas[0], [self.alphas[0]] * len(self.folds))
        Y = self._tensor(Yz_sample)
        return _choice(lambda k, grid: cv_unit_scores(self.fold_hats(k, grid), self.folds_of(k), Y)[0],
                       self.alphas, len(self.folds) if oof else 0, extend)

    def decode(self, Yz_img: np.ndarray, choice: Choice, oof: bool) -> ChunkResult:
        Y = self._tensor(Yz_img)
        n = Y.shape[1]
        scores = kept = None
        if self.per_unit:
            scores, kept = cv_unit_scores(self.hats, self.folds, Y, keep=oof)
            pick = best_alpha(scores, per_unit=True)
        grid = self.alphas if self.per_unit else [choice.alpha]  # an extended grid's penalty has its own hats
        if not self.per_unit:
            pick = np.zeros(n, dtype=int)
        tests = {s: np.empty((len(X), n), np.float32) for s, X in self.tests.items()}
        for a in np.unique(pick):
            cols = np.flatnonzero(pick == a)
            for split, H in self.test_hats(grid[a]).items():
                tests[split][:, cols] = (H @ Y[:, torch.as_tensor(cols, device=Y.device)]).cpu().numpy()
        out_oof = None
        if oof:
            out_oof = np.empty((len(self.folds.present), n), np.float32)
            row = {img: i for i, img in enumerate(self.folds.present)}
            for k, held in enumerate(self.folds.held_images):
                rows = [row[i] for i in held]
                if self.per_unit:  # each unit's penalty from the folds inside fold k's training images
                    inner, hats = self.inner(k)
                    pick_k = best_alpha(cv_unit_scores(hats, inner, Y)[0], per_unit=True)
                    for a in np.unique(pick_k):
                        cols = np.flatnonzero(pick_k == a)
                        out_oof[np.ix_(rows, cols)] = kept[k][a][:, torch.as_tensor(cols, device=Y.device)].cpu().numpy()
                else:
                    train_i = torch.as_tensor(self.folds.train_images(k), device=Y.device)
                    H = self.fold_hats(None, [choice.fold_alphas[k]])[k][0]
                    out_oof[rows] = (H @ Y[train_i]).cpu().numpy()
        return ChunkResult(tests, out_oof, np.array(grid)[pick], scores)


class SparseDecoder:
    """Voxel-selected ridge, ours (torch) or fastl2lir's, one penalty per layer."""

    def __init__(self, Xz: np.ndarray, tests: dict[str, np.ndarray], folds: ImageFolds, alphas: list[float],
                 n_voxels: int, backend: str, device):
        self.Xz, self.tests, self.folds, self.alphas = Xz, tests, folds, list(alphas)
        self.n_voxels, self.backend = n_voxels, backend
        self.device = torch.device(device)
        self.model = SelectedRidge(Xz, folds.trial_img, folds.n_images, device) if backend == "torch" else None
        sums = np.zeros((folds.n_images, Xz.shape[1]))
        np.add.at(sums, folds.trial_img, Xz)  # per-image sums of trials, in one pass
        self.X_img_mean = (sums / np.maximum(folds.counts, 1)[:, None]).astype(np.float32)

    def _fit(self, Y: np.ndarray, alphas: list[float], held: np.ndarray | None, X_new: list[np.ndarray],
             cache_key=None) -> list[list[np.ndarray]]:
        """Fit on all trials but ``held``; predictions ``[alpha][array]``."""
        if self.model is not None:
            preds = self.model.fit_predict(torch.as_tensor(Y, device=self.device), alphas, self.n_voxels,
                                           [torch.as_tensor(x, device=self.device) for x in X_new], held, cache_key)
            return [[p.cpu().numpy() for p in by_x] for by_x in preds]
        train = np.arange(len(self.Xz)) if held is None else np.setdiff1d(np.arange(len(self.Xz)), held)
        return [fastl2lir_fit_predict(self.Xz[train], Y[self.folds.trial_img[train]], a, self.n_voxels, X_new)
                for a in alphas]

    def _cv(self, Y: np.ndarray, folds: ImageFolds, exclude: np.ndarray | None, outer: bool,
            alphas: list[float] | None = None) -> np.ndarray:
        """``(n_alphas, n_units)`` held-out profile correlation over ``folds`` (trials in
        ``exclude`` left out of every fit) at ``alphas`` (default: the grid)."""
        alphas = self.alphas if alphas is None else alphas
        scores = np.zeros((len(alphas), Y.shape[1]))
        for j, held_imgs in enumerate(folds.held_images):
            held = folds.held_trials[j] if exclude is None else np.union1d(folds.held_trials[j], exclude)
            preds = self._fit(Y, alphas, held, [self.X_img_mean[held_imgs]], ("outer", j) if outer else None)
            for a, (pred,) in enumerate(preds):
                scores[a] += profile_correlation(pred, Y[held_imgs]) / len(folds)
        return scores

    def choose(self, Yz_sample: np.ndarray, oof: bool, extend: bool = False) -> Choice:
        if len(self.alphas) == 1:
            return Choice(self.alphas[0], [self.alphas[0]] * len(self.folds))
        Y = np.ascontiguousarray(Yz_sample, dtype=np.float32)

        def scores(k, grid):
            if k is None:
                return self._cv(Y, self.folds, None, True, grid)
            return self._cv(Y, self.folds.inner(k), self.folds.held_trials[k], False, grid)

        return _choice(scores, self.alphas, len(self.folds) if oof else 0, extend)

    def decode(self, Yz_img: np.ndarray, choice: Choice, oof: bool) -> ChunkResult:
        Y = np.ascontiguousarray(Yz_img, dtype=np.float32)
        names = list(self.tests)
        preds = self._fit(Y, [choice.alpha], None, [self.tests[s] for s in names])[0]
        out_oof = None
        if oof:
            out_oof = np.empty((len(self.folds.present), Y.shape[1]), np.float32)
            row = {img: i for i, img in enumerate(self.folds.present)}
            for k, held in enumerate(self.folds.held_images):
                ((pred,),) = self._fit(Y, [choice.fold_alphas[k]], self.folds.held_trials[k], [self.X_img_mean[held]],
                                       ("outer", k))
                out_oof[[row[i] for i in held]] = pred
        return ChunkResult(dict(zip(names, preds)), out_oof, np.full(Y.shape[1], choice.alpha))


def make_decoder(kind: str, alpha_per: str, backend: str, n_voxels: int, alphas: list[float], Xz: np.ndarray,
                 tests: dict[str, np.ndarray], folds: ImageFolds, device):
    """The decoder that ``decoder.kind``/``alpha_per``/``backend`` name."""
    if kind == "sparse":
        return SparseDecoder(Xz, tests, folds, alphas, n_voxels, backend, device)
    return DenseDecoder(Xz, tests, folds, alphas, alpha_per == "unit", device)
