"""Stage 1's streamed decoding equals plain ridge, and its streamed scores equal the metrics."""

import numpy as np
from sklearn.linear_model import Ridge

from shared import metrics as M
from shared.config import load_config
from shared.datasets import SplitData
from shared.evaluation import DecodingScores
from shared.store import ExperimentStore
from stage1_decode.decode import decode_subject_roi


def test_streamed_scores_equal_whole_layer_metrics(rng):
    true = rng.normal(size=(10, 300))
    pred = true + rng.normal(scale=2.0, size=true.shape)
    mean, std = rng.normal(size=300), rng.uniform(0.5, 2, 300)
    acc = DecodingScores(10)
    for units in (slice(0, 120), slice(120, 250), slice(250, 300)):
        acc.add(pred[:, units], true[:, units], mean[units], std[units])
    got = acc.result()
    assert np.isclose(got["profile_corr"], M.profile_correlation(pred, true).mean())
    assert np.isclose(got["pattern_corr"], M.pattern_correlation(pred, true, mean, std).mean())
    zp, zt = (pred - mean) / std, (true - mean) / std
    assert np.isclose(got["pairwise_id"], M.pairwise_identification(zp, zt).mean())


def test_decoded_features_equal_sklearn_ridge_on_trials(tiny_config, tmp_path, rng):
    alpha = 30.0
    cfg = load_config(tiny_config, [f"decoder.alphas=[{alpha}]", "decoder.chunk_units=7", "features.layers=[fc7]",
                                    "generator.condition_layers=[fc7]", "eval.validation_fraction=0"])
    store = ExperimentStore(cfg)
    n_img, reps, n_vox, n_units = 12, 3, 40, 25
    train_names = [f"tr{i}" for i in range(n_img)]
    test_names = [f"te{i}" for i in range(5)]
    feats = {"train": rng.normal(size=(n_img, n_units)), "natural": rng.normal(size=(5, n_units))}
    for split, names in (("train", train_names), ("natural", test_names)):
        with store.writer(store.true_file("fc7", split), names, n_units,
                          {**store.true_expect("fc7", split), "unit_shape": [n_units]}) as w:
            w.write_rows(0, feats[split].astype(np.float32))
    trial_img = np.tile(np.arange(n_img), reps)
    X = feats["train"][trial_img] @ rng.normal(size=(n_units, n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    X_test = rng.normal(size=(5, n_vox))
    (tmp_path / "a.h5").touch()
    train = SplitData(X.astype(np.float32), np.array(train_names)[trial_img], "ROI_VC", tmp_path / "a.h5")
    test = SplitData(X_test.astype(np.float32), np.array(test_names), "ROI_VC", tmp_path / "a.h5")
    decode_subject_roi(cfg, store, "sub-01", "VC", train, {"natural": test}, "cpu", train_names)
    with store.open_decoded("sub-01", "VC", "fc7", "natural") as arr:
        ours = arr.read()
        assert list(arr.names) == test_names
    xm, xs = X.mean(0), X.std(0)
    Y = feats["train"][trial_img]
    ym, ys = Y.mean(0), Y.std(0)
    ref = Ridge(alpha=alpha, fit_intercept=False).fit((X - xm) / xs, (Y - ym) / ys)
    expected = ref.predict((X_test - xm) / xs) * ys + ym
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3)


def test_stored_out_of_fold_rows_ignore_their_own_image(tiny_config, tmp_path, rng):
    """Through the whole stage-1 path (z-scoring with all training images, nested penalty
    choice, store): changing one training image's true features changes no stored
    out-of-fold row of its fold."""
    from shared.ridge import ImageFolds

    n_img, reps, n_vox, n_units = 24, 3, 30, 12
    train_names = [f"tr{i}" for i in range(n_img)]
    trial_img = np.tile(np.arange(n_img), reps)
    feats = rng.normal(size=(n_img, n_units))
    X = feats[trial_img] @ rng.normal(size=(n_units, n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    (tmp_path / "a.h5").touch()
    train = SplitData(X.astype(np.float32), np.array(train_names)[trial_img], "ROI_VC", tmp_path / "a.h5")
    test = SplitData(rng.normal(size=(4, n_vox)).astype(np.float32), np.array(["te0", "te1", "te2", "te3"]),
                     "ROI_VC", tmp_path / "a.h5")
    folds = ImageFolds(trial_img, n_img, 3, seed=0)
    victim = folds.held_images[1][0]
    stored = []
    for run, F in enumerate([feats, feats + np.eye(n_img)[:, [victim]] * rng.normal(scale=5, size=n_units)]):
        cfg = load_config(tiny_config, ["decoder.alphas=[1.0,100.0,10000.0]", "decoder.cv_folds=3",
                                        "features.layers=[fc7]", "generator.condition_layers=[fc7]",
                                        "eval.validation_fraction=0", f"work_dir={tmp_path / f'work{run}'}"])
        store = ExperimentStore(cfg)
        for split, names, values in (("train", train_names, F), ("natural", list(test.names), rng.normal(size=(4, n_units)))):
            with store.writer(store.true_file("fc7", split), names, n_units,
                              {**store.true_expect("fc7", split), "unit_shape": [n_units]}) as w:
                w.write_rows(0, values.astype(np.float32))
        decode_subject_roi(cfg, store, "sub-01", "VC", train, {"natural": test}, "cpu", train_names)
        with store.open_decoded("sub-01", "VC", "fc7", "train_oof") as arr:
            assert list(arr.names) == train_names
            stored.append(arr.read())
    same_fold = folds.held_images[1]
    np.testing.assert_allclose(stored[1][same_fold], stored[0][same_fold], rtol=1e-4, atol=1e-4)
    others = np.setdiff1d(np.arange(n_img), same_fold)
    assert np.abs(stored[1][others] - stored[0][others]).max() > 1e-3


def test_the_validation_hold_out_never_enters_a_decoder(tiny_config, tmp_path, rng):
    """Stage 1 treats the hold-out as a test set: poisoning its images' voxels and true features changes no
    decoded test row and no out-of-fold row (no penalty, fold, statistic or fit saw them), only the hold-out's
    own decoded rows, which the decoders of the test images predict from its averaged repetitions."""
    from shared.holdout import validation_split

    n_img, reps, n_vox, n_units = 24, 3, 30, 12
    train_names = [f"tr{i}" for i in range(n_img)]
    fit_names, held = validation_split(train_names, 0.25, 0)
    trial_img = np.tile(np.arange(n_img), reps)
    feats = rng.normal(size=(n_img, n_units))
    X = feats[trial_img] @ rng.normal(size=(n_units, n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    test_X, test_feats = rng.normal(size=(4, n_vox)), rng.normal(size=(4, n_units))
    is_held = np.isin(np.array(train_names)[trial_img], held)
    poison_X = X.copy()
    poison_X[is_held] = rng.normal(scale=1000, size=(is_held.sum(), n_vox))
    poison_feats = feats.copy()
    poison_feats[np.isin(train_names, held)] += 500.0
    (tmp_path / "a.h5").touch()
    out = []
    for run, (Xr, Fr) in enumerate([(X, feats), (poison_X, poison_feats)]):
        cfg = load_config(tiny_config, ["decoder.alphas=[1.0,100.0,10000.0]", "decoder.cv_folds=3", "seed=0",
                                        "features.layers=[fc7]", "generator.condition_layers=[fc7]",
                                        "eval.validation_fraction=0.25", f"work_dir={tmp_path / f'work{run}'}"])
        store = ExperimentStore(cfg)
        for split, names, values in (("train", train_names, Fr), ("natural", ["te0", "te1", "te2", "te3"], test_feats)):
            with store.writer(store.true_file("fc7", split), names, n_units,
                              {**store.true_expect("fc7", split), "unit_shape": [n_units]}) as w:
                w.write_rows(0, values.astype(np.float32))
        train = SplitData(Xr.astype(np.float32), np.array(train_names)[trial_img], "ROI_VC", tmp_path / "a.h5")
        test = SplitData(test_X.astype(np.float32), np.array(["te0", "te1", "te2", "te3"]), "ROI_VC", tmp_path / "a.h5")
        scores = decode_subject_roi(cfg, store, "sub-01", "VC", train, {"natural": test}, "cpu", train_names)
        assert set(scores["fc7"]) == {"natural", "validation"}  # the hold-out scored like a test set
        arrays = {}
        for split in ("natural", "train_oof", "validation"):
            with store.open_decoded("sub-01", "VC", "fc7", split) as arr:
                arrays[split] = (list(arr.names), arr.read())
        out.append(arrays)
    assert out[0]["train_oof"][0] == fit_names and out[0]["validation"][0] == held
    for split in ("natural", "train_oof"):
        np.testing.assert_array_equal(out[1][split][1], out[0][split][1])
    assert np.abs(out[1]["validation"][1] - out[0]["validation"][1]).max() > 1.0
