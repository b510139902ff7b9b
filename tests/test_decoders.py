"""Stage 1's decoders against the reference tools: per-unit penalties against
scikit-learn's GroupKFold + Ridge, voxel-selected ridge against fastl2lir, and
out-of-fold predictions that never depend on the held-out image's features."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from shared.ridge import ImageFolds, Standardiser
from shared.sparse_ridge import UNIT_BATCH, SelectedRidge, fastl2lir_fit_predict
from stage1_decode.decoders import make_decoder

ALPHAS = [0.3, 30.0, 3000.0]


def _problem(rng, n_img=36, reps=3, n_vox=50, n_units=24):
    """Trials in shuffled order, one image without trials, voxels that carry some units
    strongly and others barely (so penalties differ). Returns z-scored arrays."""
    trial_img = rng.permutation(np.tile(np.arange(1, n_img), reps))  # image 0 has no trials
    Y_img = rng.normal(size=(n_img, n_units))
    gain = np.geomspace(3, 0.05, n_units)
    X = (Y_img * gain)[trial_img] @ rng.normal(size=(n_units, n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    X_test = rng.normal(size=(6, n_vox))
    xs = Standardiser().fit(X)
    ys = Standardiser().fit(Y_img[trial_img])
    return trial_img, xs.transform(X).astype(np.float64), xs.transform(X_test).astype(np.float64), ys.transform(Y_img)


def _sklearn_cv(Xz, Yz, trial_img, within, seed):
    """scikit-learn's GroupKFold (3 folds, shuffled, seeded) over the trials ``within``:
    per penalty, the held-out profile correlation of every unit (mean over folds) and the
    held-out prediction of every image (mean of its trials' predictions)."""
    scores = np.zeros((len(ALPHAS), Yz.shape[1]))
    preds = {a: {} for a in ALPHAS}
    kfold = GroupKFold(n_splits=3, shuffle=True, random_state=seed)
    for tr, held in kfold.split(Xz[within], groups=trial_img[within]):
        tr, held = within[tr], within[held]
        Ytr = Yz[trial_img[tr]]
        m = Ytr.mean(0)
        held_imgs = np.unique(trial_img[held])
        for a_i, a in enumerate(ALPHAS):
            pred_trials = Ridge(alpha=a, fit_intercept=False).fit(Xz[tr], Ytr - m).predict(Xz[held]) + m
            pred = np.stack([pred_trials[trial_img[held] == i].mean(0) for i in held_imgs])
            true = Yz[held_imgs]
            pc = ((pred - pred.mean(0)) * (true - true.mean(0))).sum(0) / (
                np.linalg.norm(pred - pred.mean(0), axis=0) * np.linalg.norm(true - true.mean(0), axis=0))
            scores[a_i] += pc / 3
            preds[a].update(zip(held_imgs, pred))
    return scores, preds


def test_per_unit_penalties_pick_and_predict_what_sklearn_does(rng):
    trial_img, Xz, Xt, Yz = _problem(rng)
    folds = ImageFolds(trial_img, len(Yz), 3, seed=0)
    dec = make_decoder("ridge", "unit", "torch", 0, ALPHAS, Xz, {"test": Xt}, folds, "cpu")
    result = dec.decode(Yz, dec.choose(Yz, oof=True), oof=True)

    everything = np.arange(len(trial_img))
    ref, ref_preds = _sklearn_cv(Xz, Yz, trial_img, everything, seed=0)
    np.testing.assert_allclose(result.scores, ref, atol=1e-4)
    pick = ref.argmax(0)
    assert len(set(pick)) > 1, "the problem should need different penalties"
    np.testing.assert_array_equal(result.alphas, np.array(ALPHAS)[pick])
    expected = np.stack([Ridge(alpha=ALPHAS[p], fit_intercept=False).fit(Xz, Yz[trial_img][:, u]).predict(Xt)
                         for u, p in enumerate(pick)], axis=1)
    np.testing.assert_allclose(result.tests["test"], expected, rtol=1e-3, atol=1e-4)
    # out of fold: fold k's rows at the penalty each unit prefers within fold k's training trials
    kfold = GroupKFold(n_splits=3, shuffle=True, random_state=0)
    expected_oof = np.zeros((len(folds.present), Yz.shape[1]))
    for k, (tr, held) in enumerate(kfold.split(Xz, groups=trial_img)):
        inner_scores, _ = _sklearn_cv(Xz, Yz, trial_img, tr, seed=1 + k)
        for img in np.unique(trial_img[held]):
            row = np.searchsorted(folds.present, img)
            expected_oof[row] = [ref_preds[ALPHAS[p]][img][u] for u, p in enumerate(inner_scores.argmax(0))]
    np.testing.assert_allclose(result.oof, expected_oof, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n_feat", [10, 49])
def test_selected_ridge_equals_fastl2lir(rng, n_feat):
    trial_img, Xz, Xt, Yz = _problem(rng, n_vox=60, n_units=UNIT_BATCH + 30)  # crosses a batch boundary
    Xz[:, 7] = 0.0  # a constant voxel is never selected first, as in fastl2lir
    Xz[:, 8] = Xz[:, 9] + 0.05 * rng.normal(size=len(Xz))  # nearly collinear voxels
    model = SelectedRidge(Xz, trial_img, len(Yz))
    alphas = [1.0, 100.0]
    ours = model.fit_predict(torch.as_tensor(Yz), alphas, n_feat, [torch.as_tensor(Xt)])
    for (pred,), alpha in zip(ours, alphas):
        (ref,) = fastl2lir_fit_predict(Xz, Yz[trial_img], alpha, n_feat, [Xt])
        rel = np.abs(pred.numpy() - ref).max() / np.abs(ref).max()
        assert rel < 1e-4, rel


def test_sparse_out_of_fold_equals_fastl2lir_per_fold(rng):
    trial_img, Xz, Xt, Yz = _problem(rng, n_vox=60)
    folds = ImageFolds(trial_img, len(Yz), 3, seed=1)
    results = []
    for backend in ("torch", "fastl2lir"):
        dec = make_decoder("sparse", "layer", backend, 15, [1.0, 100.0], Xz, {"test": Xt}, folds, "cpu")
        choice = dec.choose(Yz, oof=True)
        results.append((choice, dec.decode(Yz, choice, oof=True)))
    (c1, a), (c2, b) = results
    assert (c1.alpha, c1.fold_alphas) == (c2.alpha, c2.fold_alphas)
    for x, y in [(a.tests["test"], b.tests["test"]), (a.oof, b.oof)]:
        assert np.abs(x - y).max() / np.abs(y).max() < 1e-4


@pytest.mark.parametrize("kind,alpha_per", [("ridge", "layer"), ("ridge", "unit"), ("sparse", "layer")])
def test_out_of_fold_rows_never_see_their_image(rng, kind, alpha_per):
    """Changing one training image's features (before penalties are chosen) changes no
    out-of-fold row of its fold, but changes the test predictions (the full decoder saw it)
    and other folds' rows (their decoders saw it)."""
    trial_img, Xz, Xt, Yz = _problem(rng)
    folds = ImageFolds(trial_img, len(Yz), 4, seed=0)
    dec = make_decoder(kind, alpha_per, "torch", 20, ALPHAS, Xz, {"test": Xt}, folds, "cpu")
    before = dec.decode(Yz, dec.choose(Yz, oof=True), oof=True)
    victim = folds.held_images[2][0]
    Y2 = Yz.copy()
    Y2[victim] += rng.normal(scale=3.0, size=Yz.shape[1])
    after = dec.decode(Y2, dec.choose(Y2, oof=True), oof=True)
    fold_rows = np.searchsorted(folds.present, folds.held_images[2])
    np.testing.assert_allclose(after.oof[fold_rows], before.oof[fold_rows], atol=1e-5)
    assert np.abs(after.tests["test"] - before.tests["test"]).max() > 1e-3
    other = np.setdiff1d(np.arange(len(folds.present)), fold_rows)
    assert np.abs(after.oof[other] - before.oof[other]).max() > 1e-3


def test_a_layer_the_voxels_do_not_decode_is_warned_about():
    """A penalty at the top of the grid, or no penalty with a positive cross-validated profile r, is said in words;
    a layer chosen inside the grid with a positive r is not."""
    from shared.ridge import ALPHA_MAX
    from stage1_decode.decoders import Choice, weak_decoding

    grid = [10.0, 100.0, 1000.0]
    assert weak_decoding(Choice(100.0, report={"10": 0.1, "100": 0.3, "1000": 0.2}), grid) == ""
    assert "the largest it can be (1000)" in weak_decoding(Choice(1000.0, report={"10": 0.0, "1000": 0.05}), grid)
    assert "no penalty decodes it (best cross-validated profile r -0.020)" in weak_decoding(
        Choice(1000.0, report={"10": -0.2, "1000": -0.02}), grid)
    # a pixels layer's grid grows past its top: only its own limit is the largest; per-unit penalties: nothing
    assert weak_decoding(Choice(1e5, report={"1000": 0.1, "1e+05": 0.2}), grid, extended=True) == ""
    assert "the largest it can be" in weak_decoding(Choice(ALPHA_MAX, report={"1e+09": 0.01}), grid, extended=True)
    assert weak_decoding(Choice(None, report={}), grid) == ""
