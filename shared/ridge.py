"""Multi-target ridge regression that shares one factorisation across all targets.

Fitting ridge to a whole DNN layer (up to millions of units) never forms the layer's
coefficients: predictions are ``H @ Y`` with a *hat* matrix ``H`` of shape
``(n_new, n_train)`` that depends on the voxels only. ``H`` comes from one Cholesky
factorisation of the kernel ``K + alpha I`` (``K = X X^T``, ``n_train x n_train``);
targets are then streamed through in chunks of units (``predict_chunks``), at the
cost of one matrix product per chunk. This is the dual form of ridge; it equals
scikit-learn's ``Ridge(fit_intercept=False)`` on centred data (tests check this).

Runs in torch, so the same code uses a GPU when one is present.
"""

from __future__ import annotations

import numpy as np
import torch


class KernelRidge:
    """Ridge in dual form on standardised voxels ``X`` ``(n_train, n_voxels)``.

    The kernel is computed once; ``hat`` solves for any penalty and any rows to predict,
    and ``cv_hats`` gives held-out hat matrices for grouped cross-validation.
    """

    def __init__(self, X: np.ndarray, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.X = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=self.device)
        self.K = (self.X @ self.X.T).double()  # (n_train, n_train)

    @property
    def n_train(self) -> int:
        return self.X.shape[0]

    def _solve(self, K_train: torch.Tensor, K_cross: torch.Tensor, alpha: float) -> torch.Tensor:
        """``K_cross (K_train + alpha I)^{-1}`` via Cholesky."""
        eye = torch.eye(K_train.shape[0], dtype=K_train.dtype, device=self.device)
        L = torch.linalg.cholesky(K_train + alpha * eye)
        return torch.cholesky_solve(K_cross.T, L).T

    def hat(self, X_new: np.ndarray, alpha: float) -> torch.Tensor:
        """``(n_new, n_train)`` float32 matrix H with predictions ``H @ Y_train``."""
        Xn = torch.as_tensor(np.ascontiguousarray(X_new), dtype=torch.float32, device=self.device)
        K_cross = (Xn @ self.X.T).double()
        return self._solve(self.K, K_cross, alpha).float()

    def coef_map(self, alpha: float) -> torch.Tensor:
        """``(n_voxels, n_train)`` matrix A with coefficients ``W = A @ Y_train``."""
        eye = torch.eye(self.n_train, dtype=self.K.dtype, device=self.device)
        L = torch.linalg.cholesky(self.K + alpha * eye)
        return (self.X.T.double() @ torch.cholesky_inverse(L)).float()

    def cv_hats(self, folds: list[np.ndarray], alphas: list[float]) -> list[tuple[np.ndarray, np.ndarray, list[torch.Tensor]]]:
        """For each held-out row set: ``(held_out, train_rows, [H per alpha])``.

        ``H`` maps the fold's training targets to predictions of its held-out rows.
        """
        out = []
        all_rows = np.arange(self.n_train)
        for held in folds:
            train = np.setdiff1d(all_rows, held)
            tr = torch.as_tensor(train, device=self.device)
            ho = torch.as_tensor(held, device=self.device)
            K_train = self.K[tr][:, tr]
            K_cross = self.K[ho][:, tr]
            out.append((held, train, [self._solve(K_train, K_cross, a).float() for a in alphas]))
        return out


def grouped_folds(groups: np.ndarray, n_folds: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``n_folds`` held-out sets; rows sharing a group stay together.

    Repetitions of one image must never be split across training and held-out rows.
    """
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    fold_of_group = np.empty(len(uniq), dtype=int)
    fold_of_group[perm] = np.arange(len(uniq)) % n_folds
    lookup = dict(zip(uniq, fold_of_group))
    fold = np.array([lookup[g] for g in groups])
    return [np.flatnonzero(fold == k) for k in range(n_folds)]


class Standardiser:
    """Column-wise z-scoring with statistics of the training rows (``mean_``, ``std_``)."""

    def fit(self, A: np.ndarray) -> Standardiser:
        self.mean_ = A.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = A.std(axis=0, dtype=np.float64).astype(np.float32)
        self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        return self

    def transform(self, A: np.ndarray) -> np.ndarray:
        return ((A - self.mean_) / self.std_).astype(np.float32)

    def inverse(self, A: np.ndarray) -> np.ndarray:
        return (A * self.std_ + self.mean_).astype(np.float32)


def cv_hats(ridge: KernelRidge, trial_img: np.ndarray, alphas: list[float], n_folds: int, seed: int = 0):
    """Held-out hat matrices of image-grouped folds for every penalty (``KernelRidge.cv_hats``).

    They depend on the voxels only, so one call serves every layer of a subject and ROI.
    """
    if len(alphas) == 1:
        return []
    return ridge.cv_hats(grouped_folds(trial_img, n_folds, seed=seed), list(alphas))


def select_alpha(cv: list, trial_img: np.ndarray, Yz_img: np.ndarray, alphas: list[float]) -> tuple[float, dict[str, float]]:
    """The penalty with the best held-out mean profile correlation, and every penalty's score.

    cv: from ``cv_hats``; trial_img: ``(n_train,)`` image index of each training row;
    Yz_img: ``(n_images, n_units)`` standardised targets per image (a sample of a layer's
    units is enough).
    """
    from shared.metrics import profile_correlation, summarise

    alphas = list(alphas)
    if len(alphas) == 1:
        return alphas[0], {}
    scores = np.zeros(len(alphas))
    device = cv[0][2][0].device
    Y = torch.as_tensor(np.ascontiguousarray(Yz_img[trial_img]), dtype=torch.float32, device=device)
    for held, train, hats in cv:
        for k, H in enumerate(hats):
            pred = (H @ Y[train]).cpu().numpy()
            scores[k] += summarise(profile_correlation(pred, Yz_img[trial_img[held]])) / len(cv)
    if np.isnan(scores).all():
        return alphas[len(alphas) // 2], {f"{a:g}": float("nan") for a in alphas}
    best = alphas[int(np.nanargmax(scores))]
    return best, {f"{a:g}": round(float(s), 4) for a, s in zip(alphas, scores)}


def trials_to_images(trial_img: np.ndarray, n_images: int, device) -> torch.Tensor:
    """``(n_trials, n_images)`` indicator E: a hat over trials times E is a hat over images
    (predictions ``H @ Y_trials == (H @ E) @ Y_images`` when rows repeat image targets)."""
    E = torch.zeros(len(trial_img), n_images, device=device)
    E[torch.arange(len(trial_img)), torch.as_tensor(trial_img, device=device)] = 1.0
    return E
