"""What the two baselines output, against direct computations: pixel ridge is scikit-learn's Ridge on
the same pixels (its out-of-fold predictions too), its size and contrast are chosen where they should be,
and nearest_train is the training image whose features correlate best."""

from __future__ import annotations

import numpy as np
import pytest

from test_methods import _tiny_cfg, _trials
from stage2_generate.methods import REGISTRY, Context, TestData, TrainData


def _context(cfg, images, names, **values):
    return Context.of(cfg, store=None, device="cpu", train_images=images, train_names=names, channels=3, **values)


def test_pixel_ridge_is_scikit_learns_ridge_on_the_same_pixels(tmp_path, rng):
    from dataclasses import replace

    from sklearn.linear_model import Ridge

    from shared.ridge import Standardiser

    cfg = _tiny_cfg(tmp_path)
    cfg = replace(cfg, decoder=replace(cfg.decoder, alphas=[30.0]),  # one penalty: nothing to choose
                  eval=replace(cfg.eval, pixel_ridge_sizes=[10], validation_fraction=0.0))  # one size
    train, names, code = _trials(rng)
    images = np.clip(0.5 + 0.1 * code[:, :3, None, None] + 0.05 * rng.normal(size=(len(code), 3, 10, 10)),
                     0, 1).astype(np.float32)  # 10 px, fitted as they are
    ctx = _context(cfg, images, names)
    X_test = train.X[:5] + rng.normal(size=(5, train.X.shape[1])).astype(np.float32)
    method = REGISTRY["pixel_ridge"](ctx).fit(TrainData(ctx, "sub-01", "VC", train))
    out = method.reconstruct(TestData("sub-01", "VC", "natural", [f"t{i}" for i in range(5)], [], X_test))
    x_std = Standardiser().fit(train.X)
    index = {n: i for i, n in enumerate(names)}
    ref = Ridge(alpha=30.0).fit(x_std.transform(train.X), images.reshape(len(images), -1)[[index[n] for n in
                                                                                          train.names]])
    want = np.clip(ref.predict(x_std.transform(X_test)), 0, 1).reshape(out.shape)
    np.testing.assert_allclose(out, want, atol=2e-4)
    row = method.row()
    assert (row["alpha"], row["pixel_size"], row["contrast_gain"]) == (30.0, 10, 1.0)
    assert row["choices"]["contrast"] == "as fitted (no validation hold-out)"


def _pixel_data(rng):

    train, names, code = _trials(rng, n_images=40)
    base = rng.uniform(0.3, 0.7, size=(3, 16, 16))
    pattern = rng.normal(size=(6, 3, 16, 16))
    smooth = np.einsum("nk,kchw->nchw", code, pattern)
    import torch

    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(smooth), 4, 1, padding=2)[..., :16, :16].numpy()
    images = np.clip(base + 0.1 * smooth, 0, 1).astype(np.float32)
    return train, names, images


def test_pixel_ridge_out_of_fold_predictions_are_scikit_learns_ridge_without_the_fold(tmp_path, rng):
    """As stage 1 decodes training images out of fold: each fold's ridge keeps the voxels' z-scoring over all
    training trials and centres the targets on its own training trials."""
    from sklearn.linear_model import Ridge

    from shared.ridge import ImageFolds
    from stage2_generate.methods._voxel_ridge import VoxelRidge

    cfg = _tiny_cfg(tmp_path)
    train, names, images = _pixel_data(rng)
    Y = images.reshape(len(images), -1)
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    oof = vr.fit(Y, alphas=[20.0]).out_of_fold()
    folds = ImageFolds(vr.trial_img, len(names), cfg.decoder.cv_folds, cfg.seed)
    assert len(folds) >= 2
    for k in range(len(folds)):
        fit_t = folds.train_trials(k)
        m = Y[vr.trial_img[fit_t]].mean(0)
        ref = Ridge(alpha=20.0, fit_intercept=False).fit(vr.Xz[fit_t], Y[vr.trial_img[fit_t]] - m)
        for i in folds.held_images[k]:
            held_t = folds.held_trials[k][vr.trial_img[folds.held_trials[k]] == i]
            np.testing.assert_allclose(oof[i], ref.predict(vr.Xz[held_t]).mean(0) + m, atol=3e-4)


def _known_size_images(rng, code, fine: bool) -> np.ndarray:
    """16-px images whose voxel-driven signal lives at 4 px (smooth; plus voxel-independent pixel noise) or,
    with ``fine``, pixel by pixel (no noise)."""
    import torch

    n = len(code)
    if fine:
        signal = np.einsum("nk,kchw->nchw", code, rng.normal(size=(6, 3, 16, 16)))
        return np.clip(0.5 + 0.08 * signal, 0, 1).astype(np.float32)
    coarse = torch.from_numpy(np.einsum("nk,kchw->nchw", code, rng.normal(size=(6, 3, 4, 4))))
    smooth = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False).numpy()
    return np.clip(0.5 + 0.08 * smooth + 0.15 * rng.normal(size=(n, 3, 16, 16)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("fine, want", [(False, 4), (True, 16)])
def test_pixel_ridge_takes_the_size_that_holds_the_signal(tmp_path, rng, fine, want):

    from stage2_generate.methods._voxel_ridge import VoxelRidge
    from stage2_generate.methods.pixel_ridge import fit_pixel_map

    cfg = _tiny_cfg(tmp_path)
    train, names, code = _trials(rng, n_images=40)
    images = _known_size_images(rng, code, fine)
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    pm, record = fit_pixel_map(vr, images, (), "pixcorr", None)
    assert record["size"] == want == pm.shape[-1], record["size_cv"]
    assert record["contrast"] == "as fitted (no validation hold-out)" and record["gain"] == 1.0
    _, with_held = fit_pixel_map(vr, images, (), "pixcorr", (train.X[:4], lambda recon: float(recon.std())))
    assert with_held["size"] == want  # the hold-out never moves the size, only the contrast


def test_pixel_ridge_chooses_its_contrast_on_the_held_out_images(tmp_path, rng):
    from stage2_generate.methods._voxel_ridge import VoxelRidge
    from stage2_generate.methods.pixel_ridge import fit_pixel_map

    cfg = _tiny_cfg(tmp_path)
    train, names, images = _pixel_data(rng)
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    X_held = train.X[:4]

    def spread(recon):  # a held-out score that prefers more contrast
        return float(recon.std())

    pm, record = fit_pixel_map(vr, images, (), "pixcorr", (X_held, spread))
    assert sorted(map(int, record["size_cv"])) == [4, 8, 16]
    assert record["gain"] > 1 and record["contrast"] == "rescaled"  # ridge predictions shrink toward the mean
    reachable = pm.at_size(images) - pm.mean  # the gain restores the spread the fitted size can hold
    oof = pm.out_of_fold() - pm.mean
    assert record["gain"] == pytest.approx(np.sqrt((reachable**2).mean() / (oof**2).mean()), rel=1e-4)
    as_fitted = pm.predict(X_held, 1.0)
    np.testing.assert_allclose(pm.predict(X_held), np.clip(pm.mean + record["gain"] * (as_fitted - pm.mean), 0, 1),
                               atol=1e-5)
    _, kept = fit_pixel_map(vr, images, (), "pixcorr", (X_held, lambda recon: -spread(recon)))
    assert kept["contrast"] == "as fitted" and kept["gain"] == 1.0  # the held-out images decide, both ways
    assert set(kept["contrast_validation"]) == {"as fitted", f"x{record['gain']:.3f}"}


def test_nearest_train_returns_the_training_image_whose_features_correlate_best(tmp_path, rng):
    cfg = _tiny_cfg(tmp_path)
    n = 25
    images = rng.uniform(size=(n, 3, 8, 8)).astype(np.float32)
    inputs = [rng.normal(size=(n, 4, 3, 3)).astype(np.float32), rng.normal(size=(n, 16)).astype(np.float32)]
    ctx = _context(cfg, images, [f"im{i}" for i in range(n)], train_inputs=inputs)
    picks = np.array([3, 17, 17, 8])
    decoded = [0.6 * x[picks] + rng.normal(size=x[picks].shape).astype(np.float32) for x in inputs]
    out = REGISTRY["nearest_train"](ctx).reconstruct(TestData("sub-01", "VC", "natural", list("abcd"), decoded))
    flat_train = np.concatenate([x.reshape(n, -1) for x in inputs], axis=1)
    flat_test = np.concatenate([x.reshape(len(picks), -1) for x in decoded], axis=1)
    corr = np.corrcoef(flat_test, flat_train)[:len(picks), len(picks):]
    np.testing.assert_array_equal(out, images[corr.argmax(axis=1)])
    assert (corr.argmax(axis=1) == picks).mean() >= 0.75  # the decoded features do point at their image


def test_pixel_ridges_penalty_grid_extends_past_its_ends(tmp_path, rng, monkeypatch):
    """A signal whose best penalty lies below the whole grid: the grid grows down until the best penalty is
    inside it; with the limit in the way, it stops at the limit and says so."""
    from dataclasses import replace

    from shared import ridge as shared_ridge
    from stage2_generate.methods._voxel_ridge import VoxelRidge

    cfg = _tiny_cfg(tmp_path)
    cfg = replace(cfg, decoder=replace(cfg.decoder, alphas=[1e4, 1e5], cv_folds=3))
    train, names, code = _trials(rng, n_images=60)
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    signal = (code @ rng.normal(size=(6, 20))).astype(np.float32)
    fixed, grown = vr.fit(signal), vr.fit(signal, extend=True)
    assert fixed.alpha == 1e4 and fixed.alpha_limit is None  # the low end of the configured grid
    tried = sorted(float(a) for a in grown.alpha_cv)
    assert grown.alpha < 1e4 and tried[0] < grown.alpha < tried[-1] and grown.alpha_limit is None
    assert grown.alpha_cv[f"{grown.alpha:g}"] > grown.alpha_cv["10000"]
    monkeypatch.setattr(shared_ridge, "ALPHA_MIN", 500.0)  # the next step down (1000) allowed, then no more
    capped = vr.fit(signal, extend=True)
    assert capped.alpha == 1000.0 and sorted(float(a) for a in capped.alpha_cv) == [1e3, 1e4, 1e5]
    assert capped.alpha_limit and "low end" in capped.alpha_limit


def test_nearest_trains_gallery_normalised_in_chunks_equals_it_in_one_piece(rng):
    """The gallery is built a chunk of images at a time (memory); every row is the same, bit for bit, as when all
    rows are centred and scaled at once, float16 inputs (out-of-fold features are kept so) included."""
    import torch

    from stage2_generate.methods.nearest_train import NearestTrain

    arrays = [rng.normal(2.0, 3.0, size=(37, 5, 6, 6)).astype(np.float32),
              rng.normal(size=(37, 300)).astype(np.float16)]
    whole = NearestTrain._normalise(torch.from_numpy(np.concatenate([x.reshape(37, -1) for x in arrays], axis=1)))
    for chunk in (1, 8, 37, 100):
        assert torch.equal(NearestTrain.normalised(arrays, chunk=chunk), whole)
    assert torch.allclose(whole.double().norm(dim=1), torch.ones(37, dtype=torch.float64), atol=1e-6)
