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


def test_the_labs_metrics_match_their_formulas_on_tiny_arrays(rng):
    """The Kamitani lab's evaluation (recon_eval_image.py) under its names, each against a direct computation:
    pixel pattern correlation and identification by correlation and by Euclidean distance (bdpy's, the lab's own
    call), pixel RMSE (a loop over images)."""
    true = rng.uniform(size=(6, 3, 4, 4))
    recon = np.clip(true + rng.normal(scale=0.3, size=true.shape), 0, 1)
    flat_r, flat_t = recon.reshape(6, -1), true.reshape(6, -1)
    np.testing.assert_allclose(M.pattern_correlation(flat_r, flat_t), bd_pattern(flat_r, flat_t), atol=1e-10)
    np.testing.assert_allclose(M.pairwise_identification(flat_r, flat_t), bd_pairwise(flat_r, flat_t), atol=1e-10)
    np.testing.assert_allclose(M.euclidean_identification(recon, true),
                               bd_pairwise(flat_r, flat_t, metric="euclidean"), atol=1e-10)
    direct = [np.sqrt(np.mean([(a - b) ** 2 for a, b in zip(flat_r[i], flat_t[i])])) for i in range(6)]
    np.testing.assert_allclose(M.rmse(recon, true), direct, atol=1e-12)
    assert (M.rmse(true, true) == 0).all()


def test_euclidean_identification_differs_from_correlation_where_it_should(rng):
    true = rng.uniform(size=(5, 12))
    brighter = true + 0.5  # same pattern, far away: correlation identifies it, distance need not
    assert (M.pairwise_identification(brighter, true) == 1).all()
    assert M.euclidean_identification(brighter, true).mean() < 1
    assert (M.euclidean_identification(true, true) == 1).all()


def test_top1_identification_is_the_argmax_among_all_candidates(rng):
    corr = rng.normal(size=(7, 7))
    direct = np.array([float(np.argmax(corr[i]) == i and (corr[i] == corr[i].max()).sum() == 1) for i in range(7)])
    np.testing.assert_array_equal(M.top1_hits(corr), direct)
    assert (M.top1_hits(np.eye(7)) == 1).all()
    tie = np.eye(3)
    tie[0, 1] = 1.0  # a distractor as close as the correct image: not identified
    assert M.top1_hits(tie)[0] == 0.0


class _Judge:  # a stand-in judge: its "conv5" features are the pixels, 2x2-pooled
    network = "alexnet"

    def __call__(self, x):
        import torch

        return {"conv5": torch.nn.functional.avg_pool2d(x, 2)}


def test_score_names_carry_their_actual_n_and_order_puts_the_labs_first(rng):
    from shared.evaluation import judge_features, metric_label, metric_order, score

    true = rng.uniform(size=(6, 3, 8, 8)).astype(np.float32)
    recon = np.clip(true + rng.normal(scale=0.4, size=true.shape), 0, 1).astype(np.float32)
    per = score(recon, true, judge_features(_Judge(), true, "cpu"), _Judge(), "cpu", rng)
    assert set(per) == {"pixcorr", "ssim", "rmse", "alexnet5", "nway6_alexnet5", "pairwise_id_pixel",
                        "pairwise_id_pixel_euclid", "nway6_id_pixel"}  # 6 images: 6-way, not "10-way"
    pooled_r, pooled_t = (x.reshape(6, 3, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(6, -1) for x in (recon, true))
    np.testing.assert_allclose(per["nway6_alexnet5"], M.top1_hits(M.corr_matrix(pooled_r, pooled_t)))
    assert metric_order(reversed(list(per))) == ["pixcorr", "ssim", "rmse", "alexnet5", "nway6_alexnet5",
                                                 "pairwise_id_pixel", "pairwise_id_pixel_euclid", "nway6_id_pixel"]
    assert "pixel rmse" in metric_label("rmse") and "lower is better" in metric_label("rmse")
    assert "among all 6 test images" in metric_label("nway6_alexnet5")
    assert metric_label("nway6_id_pixel").startswith("6-way")
