"""Voxel-selected ridge (the Kamitani lab's fastl2lir method) for whole layers at once.

For every unit: the ``n_feat`` voxels whose correlation with the unit over the training
trials is largest in magnitude, then ridge on those voxels plus a bias column, the bias
penalised like the weights (as fastl2lir does). fastl2lir loops over units and gathers
each unit's ``(n_feat+1)^2`` system from a voxel Gram matrix it recomputes per call;
here what all units share is computed once per (subject, ROI) and per chunk of units:

- the Gram matrix ``[X 1]^T [X 1]`` ``(V+1, V+1)``, once (and once per fold, by
  subtracting the held-out trials' part);
- voxel-unit cross products ``X^T Y`` ``(V, n_units)`` once per chunk, from per-image
  voxel sums (targets repeat over an image's trials), which give both the selection
  (correlations) and the right-hand sides;
- then, in batches of units, the small systems are gathered, Cholesky-factorised and
  solved together (the gather ordered by Gram row, so each row is read once per batch),
  and predictions are gathered products; nothing holds a ``(V, n_units)`` weight matrix.

Runs in torch (float32), so the same code uses a GPU when one is present. Equals
``fastl2lir.FastL2LiR().fit(X, Y, alpha, n_feat)`` on the same (z-scored) data (tests).
"""

from __future__ import annotations

import numpy as np
import torch

from shared.ridge import ImageFolds

UNIT_BATCH = 256  # units whose systems are solved together: memory ~ UNIT_BATCH * (n_feat+1)^2 * 4 bytes
GATHER_PIECE = 4096  # rows of the batch's systems gathered per indexing call


class SelectedRidge:
    """Voxel-selected ridge from z-scored trials ``X`` ``(n_trials, V)`` to image targets.

    trial_img: ``(n_trials,)`` image index of each trial. With ``folds``, the Gram
    matrices of every fold's training trials are kept too, for out-of-fold predictions.
    Memory: ``(1 + n_folds) * (V+1)^2 * 4`` bytes (fold Grams are made when first
    used), independent of the number of units.
    """

    def __init__(self, X: np.ndarray, trial_img: np.ndarray, n_images: int, folds: ImageFolds | None = None,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.n_voxels = X.shape[1]
        self.trial_img = np.asarray(trial_img)
        Xt = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=self.device)
        E = torch.zeros(len(trial_img), n_images, device=self.device)
        E[torch.arange(len(trial_img), device=self.device), torch.as_tensor(self.trial_img, device=self.device)] = 1.0
        self.counts = E.sum(0).double()  # trials per image
        self.X_img_sum = E.T @ Xt  # (n_images, V): per-image sums of trials
        self.X_img_mean = self.X_img_sum / self.counts.clamp(min=1).float()[:, None]
        self.folds = folds
        self._X = Xt
        self._gram = {None: self._augmented_gram(Xt)}

    def gram(self, fold: int | None) -> torch.Tensor:
        """``[X 1]^T [X 1]`` over the training trials (of ``fold``), made on first use."""
        if fold not in self._gram:
            held = torch.as_tensor(self.folds.held_trials[fold], device=self.device)
            self._gram[fold] = self._gram[None] - self._augmented_gram(self._X[held])
        return self._gram[fold]

    @staticmethod
    def _augmented_gram(X: torch.Tensor) -> torch.Tensor:
        """``[X 1]^T [X 1]`` ``(V+1, V+1)``."""
        V = X.shape[1]
        G = torch.empty(V + 1, V + 1, dtype=torch.float32, device=X.device)
        G[:V, :V] = X.T @ X
        s = X.sum(0)
        G[:V, V] = s
        G[V, :V] = s
        G[V, V] = X.shape[0]
        return G

    def _train_images(self, fold: int | None) -> np.ndarray:
        if fold is None:
            return np.flatnonzero(self.counts.cpu().numpy() > 0)
        return self.folds.train_images(fold)

    def fit_predict(self, Y_img: torch.Tensor, alpha: float, n_feat: int, X_new: list[torch.Tensor],
                    fold: int | None = None) -> list[torch.Tensor]:
        """Fit every unit of ``Y_img`` ``(n_images, n_units)`` (a target per image, repeated
        over its trials) on the training trials (of ``fold``'s training images when given)
        and predict each ``(n, V)`` array of ``X_new``: ``[(n, n_units)]``.

        Targets are centred on the training trials' mean, which is added back.
        """
        dev = self.device
        G = self.gram(fold)
        V = self.n_voxels
        k = min(n_feat, V)
        imgs = torch.as_tensor(self._train_images(fold), device=dev)
        w = self.counts[imgs].float()
        Y = Y_img.to(dev, torch.float32)[imgs]
        mean = (w[:, None] * Y).sum(0) / w.sum()
        Yc = Y - mean
        C = self.X_img_sum[imgs].T @ Yc  # (V, n_units) = X_train^T (Y - mean) over trials
        # correlation ranks |cov| / sd of each voxel over the training trials (fastl2lir's corrmat)
        n = w.sum()
        ss = G.diagonal()[:V] - G[V, :V] ** 2 / n  # sum of squared deviations per voxel
        flat = (ss / n) < 1e-8  # constant voxels are never preferred (fastl2lir zeroes them)
        score = C.abs() / ss.clamp(min=1e-30).sqrt()[:, None]
        score[flat] = 0.0
        sel = torch.topk(score, k, dim=0).indices.T.sort(dim=1).values  # (n_units, k), sorted for locality
        sel = torch.cat([sel, torch.full((sel.shape[0], 1), V, device=dev, dtype=sel.dtype)], dim=1)
        C_aug = torch.cat([C, torch.zeros(1, C.shape[1], device=dev)], dim=0)  # bias row: sum of centred Y = 0
        X_aug = [torch.cat([x.to(dev, torch.float32), torch.ones(len(x), 1, device=dev)], dim=1) for x in X_new]
        out = [torch.empty(len(x), Y.shape[1], device=dev) for x in X_new]
        for b0 in range(0, Y.shape[1], UNIT_BATCH):
            idx = sel[b0:b0 + UNIT_BATCH]  # (B, k+1)
            units = torch.arange(b0, b0 + len(idx), device=dev)
            A = _gather_systems(G, idx)
            A.diagonal(dim1=1, dim2=2).add_(alpha)
            rhs = C_aug[idx, units[:, None]].unsqueeze(-1)  # (B, k+1, 1)
            coef = _spd_solve(A, rhs, lambda u: G[idx[u][:, None], idx[u][None, :]] + alpha * torch.eye(
                k + 1, device=dev)).squeeze(-1)  # (B, k+1)
            for x, o in zip(X_aug, out):
                o[:, b0:b0 + len(idx)] = torch.einsum("nbk,bk->nb", x[:, idx], coef)
        return [o + mean for o in out]

    def out_of_fold(self, Y_img: torch.Tensor, alpha: float, n_feat: int) -> torch.Tensor:
        """``(n_present_images, n_units)``: each image predicted (from the mean of its trials)
        by the fit on the other folds; rows follow ``folds.present``."""
        folds = self.folds
        row = {img: i for i, img in enumerate(folds.present)}
        out = torch.empty(len(folds.present), Y_img.shape[1], device=self.device)
        for k, held in enumerate(folds.held_images):
            (pred,) = self.fit_predict(Y_img, alpha, n_feat, [self.X_img_mean[torch.as_tensor(held, device=self.device)]],
                                       fold=k)
            out[torch.as_tensor([row[i] for i in held], device=self.device)] = pred
        return out


def _gather_systems(G: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``G[idx[u]][:, idx[u]]`` for every row ``u`` of ``idx`` ``(B, m)``: ``(B, m, m)``.

    The memory-bound step. Gathered unit by unit, each of the ``B m^2`` values costs a
    cache miss in the large Gram; here the rows of all systems of the batch are gathered
    in the order of their row in ``G``, so each Gram row is read once per batch while it
    is in cache (about 2.5 times faster on a 10,000-voxel Gram), then put in place.
    """
    B, m = idx.shape
    flat_rows = idx.reshape(-1)
    order = torch.argsort(flat_rows, stable=True)
    out = torch.empty(B * m, m, dtype=G.dtype, device=G.device)
    for p0 in range(0, B * m, GATHER_PIECE):
        o = order[p0:p0 + GATHER_PIECE]
        out[o] = G[flat_rows[o][:, None], idx[o // m]]
    return out.view(B, m, m)


def _spd_solve(A: torch.Tensor, rhs: torch.Tensor, system) -> torch.Tensor:
    """Batched solve of symmetric positive definite systems ``A`` ``(B, m, m)`` (overwritten),
    ``rhs`` ``(B, m, 1)``; ``system(u)`` rebuilds system ``u`` for the rare one whose float32
    Cholesky fails, which is then solved in float64.

    On the CPU, LAPACK's ``posv`` per system (torch's batched Cholesky spends a third
    more time zeroing triangles and in separate triangular solves); on a GPU, torch's
    batched Cholesky.
    """
    if A.device.type == "cpu":
        from scipy.linalg import lapack

        posv = lapack.sposv if A.dtype == torch.float32 else lapack.dposv
        An, bn = A.numpy(), rhs.numpy()
        out = np.empty_like(bn)
        for u in range(len(An)):
            # A is symmetric: its transpose is the Fortran-ordered array LAPACK overwrites in place
            _, x, info = posv(An[u].T, bn[u], lower=1, overwrite_a=1)
            out[u] = x if info == 0 else np.linalg.solve(system(u).double().numpy(), bn[u].astype(np.float64))
        return torch.from_numpy(out)
    L, info = torch.linalg.cholesky_ex(A)
    y = torch.linalg.solve_triangular(L, rhs, upper=False)
    x = torch.linalg.solve_triangular(L.mT, y, upper=True)
    for u in torch.flatnonzero(info).tolist():
        x[u] = torch.linalg.solve(system(u).double(), rhs[u].double()).float()
    return x


def fastl2lir_fit_predict(X: np.ndarray, Y: np.ndarray, alpha: float, n_feat: int,
                          X_new: list[np.ndarray]) -> list[np.ndarray]:
    """The reference: fastl2lir itself at its fastest setting (one chunk, float32).

    X: ``(n_trials, V)``, Y: ``(n_trials, n_units)`` (centred here, mean added back).
    """
    import warnings

    import fastl2lir

    mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # np.matrix deprecation inside fastl2lir (see PITFALLS)
        model = fastl2lir.FastL2LiR()
        model.fit(X.astype(np.float32), (Y - mean).astype(np.float32), alpha=alpha, n_feat=min(n_feat, X.shape[1]),
                  chunk_size=0, dtype=np.float32)
        return [model.predict(x.astype(np.float32), dtype=np.float32) + mean for x in X_new]
