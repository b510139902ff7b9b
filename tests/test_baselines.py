"""What the two baselines output, against direct computations: pixel ridge is scikit-learn's Ridge on
the same pixels, and nearest_train is the training image whose features correlate best."""

from __future__ import annotations

import numpy as np

from test_methods import _tiny_cfg, _trials
from stage2_generate.methods import REGISTRY, Context, TestData, TrainData


def _context(cfg, images, names, **values):
    return Context.of(cfg, store=None, device="cpu", train_images=images, train_names=names, channels=3, **values)


def test_pixel_ridge_is_scikit_learns_ridge_on_the_same_pixels(tmp_path, rng):
    from dataclasses import replace

    from sklearn.linear_model import Ridge

    from shared.ridge import Standardiser

    cfg = _tiny_cfg(tmp_path)
    cfg = replace(cfg, decoder=replace(cfg.decoder, alphas=[30.0]))  # one penalty: nothing to choose
    train, names, code = _trials(rng)
    images = np.clip(0.5 + 0.1 * code[:, :3, None, None] + 0.05 * rng.normal(size=(len(code), 3, 10, 10)),
                     0, 1).astype(np.float32)  # 10 px: below eval.pixel_ridge_size, fitted as they are
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
    assert method.row() == {"alpha": 30.0}


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
