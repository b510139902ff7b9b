"""Stage 1's decoders against the reference tools: per-unit penalties against
scikit-learn's GroupKFold + Ridge, voxel-selected ridge against fastl2lir, and
out-of-fold predictions that never depend on the held-out image's features."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from shared.ridge import ImageFolds, Standardiser
from shared.sparse_ridge import SelectedRidge, fastl2lir_fit_predict
from stage1_decode.decoders import make_decoder

ALPHAS = [0.3, 30.0, 3000.0]


def _problem(rng, n_img=36, reps=3, n_vox=50, n_units=24):
    """Trials whose voxels carry some units strongly and others barely (so penalties differ)."""
    trial_img = np.tile(np.arange(n_img), reps)
    Y_img = rng.normal(size=(n_img, n_units))
    gain = np.geomspace(3, 0.05, n_units)
    X = (Y_img * gain)[trial_img] @ rng.normal(size=(n_units, n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    X_test = rng.normal(size=(6, n_vox))
    xs = Standardiser().fit(X)
    ys = Standardiser().fit(Y_img[trial_img])
    return trial_img, xs.transform(X).astype(np.float64), xs.transform(X_test).astype(np.float64), ys.transform(Y_img)


def test_per_unit_penalties_pick_and_predict_what_sklearn_does(rng):
    trial_img, Xz, Xt, Yz = _problem(rng)
    n_img = len(Yz)
    folds = ImageFolds(trial_img, n_img, 3, seed=0)
    dec = make_decoder("ridge", "unit", "torch", 0, ALPHAS, Xz, {"test": Xt}, folds, "cpu")
    result, scores = dec.decode(Yz, None, oof=True)

    # the reference: scikit-learn's GroupKFold (same seed) and Ridge fit per fold, per penalty
    kfold = GroupKFold(n_splits=3, shuffle=True, random_state=0)
    ref = np.zeros((len(ALPHAS), Yz.shape[1]))
    oof_ref = {a: np.zeros_like(Yz) for a in ALPHAS}
    for tr, held in kfold.split(Xz, groups=trial_img):
        Ytr = Yz[trial_img[tr]]
        m = Ytr.mean(0)
        held_imgs = np.unique(trial_img[held])
        for a_i, a in enumerate(ALPHAS):
            pred_trials = Ridge(alpha=a, fit_intercept=False).fit(Xz[tr], Ytr - m).predict(Xz[held]) + m
            pred = np.stack([pred_trials[trial_img[held] == i].mean(0) for i in held_imgs])
            true = Yz[held_imgs]
            pc = ((pred - pred.mean(0)) * (true - true.mean(0))).sum(0) / (
                np.linalg.norm(pred - pred.mean(0), axis=0) * np.linalg.norm(true - true.mean(0), axis=0))
            ref[a_i] += pc / 3
            oof_ref[a][held_imgs] = pred
    np.testing.assert_allclose(scores, ref, atol=1e-4)
    pick = ref.argmax(0)
    assert len(set(pick)) > 1, "the problem should need different penalties"
    np.testing.assert_array_equal(result.alphas, np.array(ALPHAS)[pick])
    expected = np.stack([Ridge(alpha=ALPHAS[p], fit_intercept=False).fit(Xz, Yz[trial_img][:, u]).predict(Xt)
                         for u, p in enumerate(pick)], axis=1)
    np.testing.assert_allclose(result.tests["test"], expected, rtol=1e-3, atol=1e-4)
    expected_oof = np.stack([oof_ref[ALPHAS[p]][:, u] for u, p in enumerate(pick)], axis=1)
    np.testing.assert_allclose(result.oof, expected_oof, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n_feat", [10, 49])
def test_selected_ridge_equals_fastl2lir(rng, n_feat):
    trial_img, Xz, Xt, Yz = _problem(rng, n_vox=60)
    Xz[:, 7] = 0.0  # a constant voxel is never selected first, as in fastl2lir
    model = SelectedRidge(Xz, trial_img, len(Yz))
    for alpha in (1.0, 100.0):
        (ours,) = model.fit_predict(torch.as_tensor(Yz), alpha, n_feat, [torch.as_tensor(Xt)])
        (ref,) = fastl2lir_fit_predict(Xz, Yz[trial_img], alpha, n_feat, [Xt])
        rel = np.abs(ours.numpy() - ref).max() / np.abs(ref).max()
        assert rel < 1e-4, rel


def test_sparse_out_of_fold_equals_fastl2lir_per_fold(rng):
    trial_img, Xz, Xt, Yz = _problem(rng, n_vox=60)
    folds = ImageFolds(trial_img, len(Yz), 3, seed=1)
    ours = make_decoder("sparse", "layer", "torch", 15, [10.0], Xz, {"test": Xt}, folds, "cpu")
    ref = make_decoder("sparse", "layer", "fastl2lir", 15, [10.0], Xz, {"test": Xt}, folds, "cpu")
    a, _ = ours.decode(Yz, 10.0, oof=True)
    b, _ = ref.decode(Yz, 10.0, oof=True)
    for x, y in [(a.tests["test"], b.tests["test"]), (a.oof, b.oof)]:
        assert np.abs(x - y).max() / np.abs(y).max() < 1e-4


@pytest.mark.parametrize("kind,alpha_per", [("ridge", "layer"), ("ridge", "unit"), ("sparse", "layer")])
def test_out_of_fold_rows_never_see_their_image(rng, kind, alpha_per):
    """Changing one training image's features changes no out-of-fold row of its fold,
    but does change the test predictions (the full decoder saw it)."""
    trial_img, Xz, Xt, Yz = _problem(rng)
    folds = ImageFolds(trial_img, len(Yz), 4, seed=0)
    alphas = [30.0] if alpha_per == "layer" else ALPHAS
    dec = make_decoder(kind, alpha_per, "torch", 20, alphas, Xz, {"test": Xt}, folds, "cpu")
    alpha = None if alpha_per == "unit" else 30.0
    before, _ = dec.decode(Yz, alpha, oof=True)
    victim = folds.held_images[2][0]
    Y2 = Yz.copy()
    Y2[victim] += rng.normal(scale=3.0, size=Yz.shape[1])
    after, _ = dec.decode(Y2, alpha, oof=True)
    fold_rows = np.searchsorted(folds.present, folds.held_images[2])
    if alpha_per == "unit":  # per-unit penalties are chosen with every image: compare units whose choice held
        same = before.alphas == after.alphas
        assert same.any()
        np.testing.assert_allclose(after.oof[np.ix_(fold_rows, same)], before.oof[np.ix_(fold_rows, same)], atol=1e-5)
    else:
        np.testing.assert_allclose(after.oof[fold_rows], before.oof[fold_rows], atol=1e-5)
    assert np.abs(after.tests["test"] - before.tests["test"]).max() > 1e-3
    other = np.setdiff1d(np.arange(len(folds.present)), fold_rows)
    assert np.abs(after.oof[other] - before.oof[other]).max() > 1e-3
