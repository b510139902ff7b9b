import numpy as np
from bdpy.evals.metrics import pairwise_identification as bd_pairwise
from bdpy.evals.metrics import pattern_correlation as bd_pattern
from bdpy.evals.metrics import profile_correlation as bd_profile

from shared import metrics as M


def test_correlations_and_identification_match_bdpy(rng):
    true = rng.normal(size=(12, 50))
    pred = true + rng.normal(scale=1.5, size=true.shape)
    np.testing.assert_allclose(M.profile_correlation(pred, true), bd_profile(pred, true).ravel(), atol=1e-10)
    np.testing.assert_allclose(M.pattern_correlation(pred, true), bd_pattern(pred, true), atol=1e-10)
    np.testing.assert_allclose(M.pairwise_identification(pred, true), bd_pairwise(pred, true), atol=1e-10)


def test_identification_extremes(rng):
    true = rng.normal(size=(20, 30))
    assert M.pairwise_identification(true, true).mean() == 1.0
    shuffled = true[np.roll(np.arange(20), 1)]  # prediction i is exactly distractor i-1
    acc = M.pairwise_identification(shuffled, true)
    assert (acc <= 18 / 19).all()  # the exact distractor always wins
    assert 0.3 < acc.mean() < 0.6  # the rest is chance
    corr = M.corr_matrix(true, true)
    assert M.nway_identification(corr, 5, rng) == 1.0
    many = rng.normal(size=(300, 30))
    noise = M.corr_matrix(rng.normal(size=(300, 30)), many)  # unrelated predictions: chance is 1/5
    assert 0.14 < M.nway_identification(noise, 5, rng, draws=50) < 0.26


def test_ssim_matches_scikit_image(rng):
    from skimage.metrics import structural_similarity

    a = rng.uniform(size=(3, 3, 24, 24))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    w = np.array([0.299, 0.587, 0.114])[None, :, None, None]
    ours = M.ssim(b, a)
    for i in range(3):
        ref = structural_similarity((b[i:i + 1] * w).sum(1)[0], (a[i:i + 1] * w).sum(1)[0], data_range=1.0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(ours[i] - ref) < 1e-9  # same window and constants as scikit-image
    assert np.allclose(M.ssim(a, a), 1.0)


def test_single_trial_reliability_recovers_known_value(rng):
    n_img, reps, n_vox = 400, 4, 50
    signal = rng.normal(size=(n_img, n_vox))
    # noise variance 3 -> reliability 1 / (1 + 3) = 0.25
    X = np.concatenate([signal + rng.normal(scale=np.sqrt(3), size=signal.shape) for _ in range(reps)])
    names = np.tile(np.arange(n_img).astype(str), reps)
    rel = M.single_trial_reliability(X, names)
    assert abs(np.median(rel) - 0.25) < 0.05


def test_ssim_works_on_images_smaller_than_its_window(rng):
    x = rng.uniform(0, 1, (4, 3, 10, 10))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    assert np.allclose(M.ssim(x, x), 1) and (M.ssim(y, x) < 0.95).all()
    assert M.ssim(x[..., :8, :8], x[..., :8, :8]).shape == (4,)
