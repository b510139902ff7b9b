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


def grouped_folds(groups: np.ndarray, n_folds: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``n_folds`` held-out sets; rows sharing a group stay together.

    Repetitions of one image must never be split across training and held-out rows.
    scikit-learn's ``GroupKFold`` (shuffled, seeded) assigns the groups.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        return []  # no cross-validation (one penalty, no out-of-fold features)
    kfold = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [np.sort(held) for _, held in kfold.split(np.zeros(len(groups)), groups=groups)]


class ImageFolds:
    """Image-grouped folds of the training trials, in image and in trial indices.

    trial_img: ``(n_trials,)`` image index of each training trial (into ``n_images``).
    ``within``: the trials to split (default all), e.g. the training trials of an outer
    fold for nested cross-validation. Images without trials there are in no fold.
    ``held_images[k]`` are the images of fold k (sorted); every repetition of an image
    lies in the same fold.
    """

    def __init__(self, trial_img: np.ndarray, n_images: int, n_folds: int, seed: int = 0,
                 within: np.ndarray | None = None):
        self.trial_img = np.asarray(trial_img)
        self.n_images = n_images
        self.within = np.arange(len(self.trial_img)) if within is None else np.sort(np.asarray(within))
        self.counts = np.bincount(self.trial_img, minlength=n_images).astype(np.float64)
        self.held_trials = [self.within[h] for h in grouped_folds(self.trial_img[self.within], n_folds, seed)]
        self.held_images = [np.unique(self.trial_img[t]) for t in self.held_trials]
        # images with trials in ``within``: the rows of out-of-fold arrays
        self.present = np.unique(self.trial_img[self.within])
        self.seed = seed

    def __len__(self) -> int:
        return len(self.held_trials)

    def train_trials(self, k: int) -> np.ndarray:
        return np.setdiff1d(self.within, self.held_trials[k])

    def train_images(self, k: int) -> np.ndarray:
        return np.setdiff1d(self.present, self.held_images[k])

    def inner(self, k: int) -> ImageFolds:
        """Folds of fold k's training trials (as many as here): penalties for fold k's
        out-of-fold predictions are chosen with them, never with fold k's images."""
        return ImageFolds(self.trial_img, self.n_images, len(self), seed=self.seed + 1 + k,
                          within=self.train_trials(k))


def fold_hats(ridge: KernelRidge, folds: ImageFolds, alphas: list[float]) -> list[list[torch.Tensor]]:
    """Held-out hat matrices over images, ``[fold][alpha] -> (n_held_images, n_train_images)``.

    ``H @ Y[folds.train_images(k)]`` predicts the held-out images of fold k, each the
    mean of the predictions of its held-out trials (as test images average their
    repetitions), from a decoder fit on the fold's training trials only. The hat
    centres targets on the mean of the fold's training trials and adds it back, so no
    statistic of a held-out image's features enters its prediction.
    """
    out = []
    for k, held_t in enumerate(folds.held_trials):
        train_t, train_i, held_i = folds.train_trials(k), folds.train_images(k), folds.held_images[k]
        dev = ridge.device
        tr, ho = torch.as_tensor(train_t, device=dev), torch.as_tensor(held_t, device=dev)
        K_train, K_cross = ridge.K[tr][:, tr], ridge.K[ho][:, tr]
        # held trials -> held images (mean), training trials <- training images (indicator)
        pos_h = {img: i for i, img in enumerate(held_i)}
        A = torch.zeros(len(held_i), len(held_t), dtype=torch.float64, device=dev)
        A[torch.as_tensor([pos_h[i] for i in folds.trial_img[held_t]], device=dev), torch.arange(len(held_t), device=dev)] = 1.0
        A /= A.sum(1, keepdim=True)
        pos_t = {img: i for i, img in enumerate(train_i)}
        E = torch.zeros(len(train_t), len(train_i), dtype=torch.float64, device=dev)
        E[torch.arange(len(train_t), device=dev), torch.as_tensor([pos_t[i] for i in folds.trial_img[train_t]], device=dev)] = 1.0
        w = torch.as_tensor(folds.counts[train_i] / folds.counts[train_i].sum(), device=dev)  # trial-weighted mean
        hats = []
        K_cross = A @ K_cross  # average the held-out trials first: fewer right-hand sides to solve
        for a in alphas:
            H = ridge._solve(K_train, K_cross, a) @ E
            hats.append((H + (1.0 - H.sum(1, keepdim=True)) * w[None, :]).float())  # H (Y - m) + m
        out.append(hats)
    return out


def cv_unit_scores(hats: list[list[torch.Tensor]], folds: ImageFolds, Yz_img: torch.Tensor,
                   keep: bool = False) -> tuple[np.ndarray, list | None]:
    """Held-out profile correlation of every unit at every penalty, averaged over folds.

    hats: from ``fold_hats``; Yz_img: ``(n_images, n_units)`` standardised targets.
    Returns ``(n_alphas, n_units)`` scores (NaN for units constant in a fold) and, with
    ``keep``, the held-out predictions ``[fold][alpha] -> (n_held_images, n_units)``.
    """
    n_alpha = len(hats[0])
    scores = torch.zeros(n_alpha, Yz_img.shape[1], dtype=torch.float64, device=Yz_img.device)
    kept = [] if keep else None
    for k, by_alpha in enumerate(hats):
        train_i = torch.as_tensor(folds.train_images(k), device=Yz_img.device)
        true = Yz_img[torch.as_tensor(folds.held_images[k], device=Yz_img.device)]
        t = true - true.mean(0)
        t_norm = t.norm(dim=0)
        preds = [H @ Yz_img[train_i] for H in by_alpha]
        for a, pred in enumerate(preds):  # profile correlation, in torch (it runs for every unit of a layer)
            p = pred - pred.mean(0)
            scores[a] += ((p * t).sum(0) / (p.norm(dim=0) * t_norm)).double() / len(hats)
        if keep:
            kept.append(preds)
    scores = scores.cpu().numpy()
    return scores, kept


# a self-extending penalty grid (``search_alpha``) goes at most this many steps past each end of the grid it
# starts from, and never outside [ALPHA_MIN, ALPHA_MAX] (z-scored voxels: a penalty of 1e9 or more shrinks any
# realistic fit to the mean, one of 1e-3 or less leaves it unregularised)
MAX_EXTENSIONS = 6
ALPHA_MIN, ALPHA_MAX = 1e-3, 1e9


def mean_scores(scores: np.ndarray) -> list[float]:
    """The mean over units of each penalty's ``cv_unit_scores`` (NaN units left out; -inf when all are)."""
    valid = ~np.isnan(scores)
    mean = np.where(valid, scores, 0).sum(1) / np.maximum(valid.sum(1), 1)
    return [float(m) if v else -np.inf for m, v in zip(mean, valid.any(1))]


def search_alpha(score, alphas: list[float], extend: bool = True) -> tuple[float, dict[float, float], str | None]:
    """The best penalty by ``score`` (penalties -> their mean held-out scores) over ``alphas`` and, with ``extend``,
    beyond them: while the best lies at an end of the grid, the next one past it is tried (the grid's own step
    at that end, at least x10), up to ``MAX_EXTENSIONS`` times per end and within [``ALPHA_MIN``, ``ALPHA_MAX``].
    Returns the penalty (a tie keeps the smaller), every penalty tried with its score, and why an end stopped
    (None when the best lies inside the grid)."""
    alphas = sorted(float(a) for a in alphas)
    tried = dict(zip(alphas, score(alphas)))
    ends, limit = {"low": 0, "high": 0}, None
    while True:
        grid = sorted(tried)
        alpha = max(grid, key=lambda a: (tried[a], -grid.index(a)))
        at = "low" if alpha == grid[0] else "high" if alpha == grid[-1] else None
        if not extend or at is None or len(grid) < 2:
            break
        step = max(10.0, grid[1] / grid[0] if at == "low" else grid[-1] / grid[-2])
        nxt = alpha / step if at == "low" else alpha * step
        if ends[at] >= MAX_EXTENSIONS or not ALPHA_MIN <= nxt <= ALPHA_MAX:
            limit = f"the {at} end of the grid reached its limit ({alpha:g})"
            break
        ends[at] += 1
        tried[nxt] = score([nxt])[0]
    return alpha, tried, limit


def best_alpha(scores: np.ndarray, per_unit: bool) -> np.ndarray | int:
    """Index of the best penalty in ``scores`` ``(n_alphas, n_units)``: one for the layer
    (best mean over units) or one per unit. Ties and NaN scores lose to the first penalty."""
    if per_unit:
        return np.where(np.isnan(scores), -np.inf, scores).argmax(axis=0)
    valid = ~np.isnan(scores)
    mean = np.where(valid, scores, 0).sum(1) / np.maximum(valid.sum(1), 1)
    return int(np.where(valid.any(1), mean, -np.inf).argmax())


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


def select_alpha(ridge: KernelRidge, trial_img: np.ndarray, Yz_img: np.ndarray, alphas: list[float], n_folds: int,
                 seed: int = 0) -> tuple[float, dict[str, float]]:
    """The penalty with the best held-out mean profile correlation, and every penalty's score.

    trial_img: ``(n_train,)`` image index of each training row; Yz_img: ``(n_images,
    n_units)`` standardised targets per image (a sample of a layer's units is enough).
    """
    alphas = list(alphas)
    if len(alphas) == 1:
        return alphas[0], {}
    folds = ImageFolds(trial_img, len(Yz_img), n_folds, seed)
    Y = torch.as_tensor(np.ascontiguousarray(Yz_img), dtype=torch.float32, device=ridge.device)
    scores, _ = cv_unit_scores(fold_hats(ridge, folds, alphas), folds, Y)
    best = best_alpha(scores, per_unit=False)
    return alphas[best], {f"{a:g}": round(float(np.nanmean(s)), 4) for a, s in zip(alphas, scores)}


def trials_to_images(trial_img: np.ndarray, n_images: int, device) -> torch.Tensor:
    """``(n_trials, n_images)`` indicator E: a hat over trials times E is a hat over images
    (predictions ``H @ Y_trials == (H @ E) @ Y_images`` when rows repeat image targets)."""
    E = torch.zeros(len(trial_img), n_images, device=device)
    E[torch.arange(len(trial_img), device=device), torch.as_tensor(trial_img, device=device)] = 1.0
    return E
