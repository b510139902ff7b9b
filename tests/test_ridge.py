import numpy as np
import pytest
from sklearn.linear_model import Ridge

from shared.ridge import KernelRidge, Standardiser, grouped_folds, select_alpha, trials_to_images


@pytest.mark.parametrize("n,d", [(40, 100), (80, 30)])
def test_kernel_ridge_matches_sklearn(rng, n, d):
    X = rng.normal(size=(n, d))
    Y = X @ rng.normal(size=(d, 7)) + rng.normal(size=(n, 7))
    Xn = rng.normal(size=(9, d))
    Xs, Ys = Standardiser().fit(X), Standardiser().fit(Y)
    Xz, Yz = Xs.transform(X), Ys.transform(Y)
    for alpha in (0.5, 50.0):
        ridge = KernelRidge(Xz)
        ours = Ys.inverse((ridge.hat(Xs.transform(Xn), alpha) @ __import__("torch").as_tensor(Yz)).numpy())
        ref = Ridge(alpha=alpha, fit_intercept=False).fit(Xz, Yz)
        expected = Ys.inverse(ref.predict(Xs.transform(Xn)))
        np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3)
        W = (ridge.coef_map(alpha) @ __import__("torch").as_tensor(Yz)).numpy()
        np.testing.assert_allclose(W, ref.coef_.T, rtol=1e-3, atol=1e-4)


def test_grouped_folds_keep_repetitions_together(rng):
    groups = np.repeat(np.arange(30), 4)[rng.permutation(120)]
    folds = grouped_folds(groups, 3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))
    for k, held in enumerate(folds):
        others = np.concatenate([f for j, f in enumerate(folds) if j != k])
        assert not set(groups[held]) & set(groups[others])


def test_select_alpha_prefers_strong_penalty_on_noise_and_weak_on_signal(rng):
    n_img, reps, d = 60, 3, 200
    trial_img = np.repeat(np.arange(n_img), reps)
    Y = rng.normal(size=(n_img, 20)).astype(np.float32)
    signal = Y[trial_img] @ rng.normal(size=(20, d))
    for X, expected in [(signal + 0.1 * rng.normal(size=signal.shape), 0.01),
                        (rng.normal(size=signal.shape), 1e4)]:
        Xz = Standardiser().fit(X).transform(X)
        best, scores = select_alpha(KernelRidge(Xz), trial_img, Y, [0.01, 1e4], 3)
        assert best == expected, scores


def test_trials_to_images_collapses_repeated_targets(rng):
    import torch

    trial_img = np.array([0, 1, 1, 2, 0])
    E = trials_to_images(trial_img, 3, "cpu")
    Y = torch.as_tensor(rng.normal(size=(3, 4)), dtype=torch.float32)
    H = torch.as_tensor(rng.normal(size=(2, 5)), dtype=torch.float32)
    torch.testing.assert_close((H @ E) @ Y, H @ Y[trial_img])
