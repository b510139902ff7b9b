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
``fastl2lir.FastL2LiR().fit(X, Y, alpha, n_feat)`` on the same z-scored voxels and
targets centred on the training trials' mean (fastl2lir penalises its bias, so it is
not shift-invariant; we centre, fit, and add the mean back) (tests).
"""

from __future__ import annotations

import numpy as np
import torch

from shared.ridge import trials_to_images

UNIT_BATCH = 256  # units whose systems are solved together: memory ~ UNIT_BATCH * (n_feat+1)^2 * 4 bytes
GATHER_PIECE = 4096  # rows of the batch's systems gathered per indexing call


UNIT_BLOCK = 2048  # units whose voxel cross products are held at once: memory ~ 3 * V * UNIT_BLOCK * 4 bytes


class SelectedRidge:
    """Voxel-selected ridge from z-scored trials ``X`` ``(n_trials, V)`` to image targets.

    trial_img: ``(n_trials,)`` image index of each trial. A fit can leave out any set of
    trials (a fold's held-out images): its Gram is the full one minus theirs, made on
    first use and kept when the caller gives a ``cache_key``. Memory: ``(1 + kept) *
    (V+1)^2 * 4`` bytes plus a block of units, independent of the number of units.
    """

    def __init__(self, X: np.ndarray, trial_img: np.ndarray, n_images: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.n_voxels = X.shape[1]
        self.trial_img = np.asarray(trial_img)
        self._X = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=self.device)
        E = trials_to_images(self.trial_img, n_images, self.device)
        self.counts = E.sum(0)  # trials per image
        self.X_img_sum = E.T @ self._X  # (n_images, V): per-image sums of trials
        self._gram = {None: self._augmented_gram(self._X)}

    def _gram_without(self, held: np.ndarray | None, cache_key) -> torch.Tensor:
        """``[X 1]^T [X 1]`` over all trials but ``held``."""
        if held is None:
            return self._gram[None]
        if cache_key is not None and cache_key in self._gram:
            return self._gram[cache_key]
        G = self._gram[None] - self._augmented_gram(self._X[torch.as_tensor(held, device=self.device)])
        if cache_key is not None:
            self._gram[cache_key] = G
        return G

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

    def image_means(self, images: np.ndarray) -> torch.Tensor:
        """``(len(images), V)``: each image's mean over its trials (how test samples are averaged)."""
        idx = torch.as_tensor(images, device=self.device)
        return self.X_img_sum[idx] / self.counts[idx][:, None]

    def fit_predict(self, Y_img: torch.Tensor, alphas: list[float], n_feat: int, X_new: list[torch.Tensor],
                    held: np.ndarray | None = None, cache_key=None) -> list[list[torch.Tensor]]:
        """Fit every unit of ``Y_img`` ``(n_images, n_units)`` (a target per image, repeated
        over its trials) on all trials but ``held``, at each penalty of ``alphas``, and
        predict each ``(n, V)`` array of ``X_new``: ``[alpha][array] -> (n, n_units)``.

        Targets are centred on the training trials' mean, which is added back; fastl2lir
        (which penalises its bias) gives the same on targets so centred. Voxels are
        selected once for all penalties.
        """
        dev = self.device
        G = self._gram_without(held, cache_key)
        V = self.n_voxels
        k = min(n_feat, V)
        train_trials = np.arange(len(self.trial_img)) if held is None else np.setdiff1d(
            np.arange(len(self.trial_img)), held)
        imgs = torch.as_tensor(np.unique(self.trial_img[train_trials]), device=dev)
        w = self.counts[imgs]
        n = w.sum()
        ss = G.diagonal()[:V] - G[V, :V] ** 2 / n  # sum of squared deviations of each voxel
        flat = (ss / n) < 1e-8  # constant voxels are never preferred (fastl2lir zeroes them)
        inv_sd = torch.where(flat, torch.zeros_like(ss), 1.0 / ss.clamp(min=1e-30).sqrt())
        X_aug = [torch.cat([x.to(dev, torch.float32), torch.ones(len(x), 1, device=dev)], dim=1) for x in X_new]
        out = [[torch.empty(len(x), Y_img.shape[1], device=dev) for x in X_new] for _ in alphas]
        eye = torch.eye(k + 1, device=dev)
        for u0 in range(0, Y_img.shape[1], UNIT_BLOCK):
            Y = Y_img[imgs, u0:u0 + UNIT_BLOCK].to(dev, torch.float32)
            mean = (w[:, None] * Y).sum(0) / n
            C = self.X_img_sum[imgs].T @ (Y - mean)  # (V, units) = X_train^T (Y - mean) over trials
            # correlation ranks |cov| / sd of each voxel over the training trials (fastl2lir's corrmat)
            sel = torch.topk(C.abs() * inv_sd[:, None], k, dim=0).indices.T.sort(dim=1).values  # sorted: locality
            sel = torch.cat([sel, torch.full((sel.shape[0], 1), V, device=dev, dtype=sel.dtype)], dim=1)
            C_aug = torch.cat([C, torch.zeros(1, C.shape[1], device=dev)], dim=0)  # bias row: sum of centred Y = 0
            del C
            for b0 in range(0, sel.shape[0], UNIT_BATCH):
                idx = sel[b0:b0 + UNIT_BATCH]  # (B, k+1)
                rhs = C_aug[idx, torch.arange(b0, b0 + len(idx), device=dev)[:, None]].unsqueeze(-1)  # (B, k+1, 1)
                gathered = _gather_systems(G, idx)
                for a, alpha in enumerate(alphas):
                    A = gathered.clone() if a < len(alphas) - 1 else gathered
                    A.diagonal(dim1=1, dim2=2).add_(alpha)
                    coef = _spd_solve(A, rhs, lambda u: G[idx[u][:, None], idx[u][None, :]] + alpha * eye).squeeze(-1)
                    cols = slice(u0 + b0, u0 + b0 + len(idx))
                    for x, o in zip(X_aug, out[a]):
                        o[:, cols] = torch.einsum("nbk,bk->nb", x[:, idx], coef) + mean[b0:b0 + len(idx)]
        return out


def _gather_systems(G: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``G[idx[u]][:, idx[u]]`` for every row ``u`` of ``idx`` ``(B, m)``: ``(B, m, m)``.

    The memory-bound step. Gathered unit by unit, each of the ``B m^2`` values costs a
    cache miss in the large Gram; here the rows of all systems of the batch are gathered
    in the order of their row in ``G``, so each Gram row is read once per batch while it
    is in cache, then put in place.
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
