"""Matrix datasets (.mat v5, .mat v7.3, .npz): read in every layout, then run through both stages
and compare with one command each."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from scipy.io import savemat

from shared.config import load_config
from shared.errors import UserError
from conftest import TINY

SIDE = 28


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 28, 28)`` grey images in [0, 1]: two Gaussian blobs each, and one marked pixel (row 2, column 5)
    that shows whether rows and columns were swapped on the way."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    out = np.zeros((n, SIDE, SIDE))
    for i in range(n):
        for _ in range(2):
            cy, cx = rng.uniform(6, 22, 2)
            out[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 5) ** 2))
    out = np.clip(out / out.max(axis=(1, 2), keepdims=True), 0, 0.9)
    out[:, 2, 5] = 1.0
    return out


def _voxels(rng: np.random.Generator, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    coarse = images.reshape(len(images), 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(images), -1)
    return coarse @ weights + 0.3 * rng.standard_normal((len(images), weights.shape[1]))


def write_matrix_file(path: Path, kind: str, n_train: int = 60, n_test: int = 8, seed: int = 0) -> dict:
    """A matrix dataset as labs ship them; ``kind``: 'npz' (C order rows), 'mat5' (MATLAB column-major rows),
    'mat73' (HDF5 with MATLAB's reversed axes), 'mat5_stack' (whole images, samples last), 'mat5_columns' (whole
    images and the voxel matrices both with the samples last: voxels x samples)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((49, 150))
    tr, te = _images(rng, n_train), _images(rng, n_test)
    data = {"X_train": _voxels(rng, tr, w), "X_test": _voxels(rng, te, w)}
    if kind == "npz":
        np.savez(path, **data, Y_train=tr.reshape(n_train, -1), Y_test=te.reshape(n_test, -1))
    elif kind == "mat5":
        savemat(path, {**data, "Y_train": np.stack([im.ravel(order="F") for im in tr]),
                       "Y_test": np.stack([im.ravel(order="F") for im in te])})
    elif kind == "mat5_stack":
        savemat(path, {**data, "Y_train": np.moveaxis(tr, 0, -1), "Y_test": np.moveaxis(te, 0, -1)})
    elif kind == "mat5_columns":
        savemat(path, {"X_train": data["X_train"].T, "X_test": data["X_test"].T, "Y_train": np.moveaxis(tr, 0, -1),
                       "Y_test": np.moveaxis(te, 0, -1)})
    elif kind == "mat73":
        with h5py.File(path, "w", userblock_size=512) as f:
            for k, v in {**data, "Y_train": np.stack([im.ravel(order="F") for im in tr]),
                         "Y_test": np.stack([im.ravel(order="F") for im in te])}.items():
                f.create_dataset(k, data=np.ascontiguousarray(v.T))  # how MATLAB's column-major arrays look in HDF5
                f[k].attrs["MATLAB_class"] = np.bytes_("double")
        with open(path, "r+b") as fh:
            fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sat Nov 28 2026 HDF5 schema 1.00 .")
    else:
        raise ValueError(kind)
    return {"train": tr, "test": te, **data}


def _config(tmp_path: Path, file: str, **matrix) -> Path:
    cfg = {**TINY, "data": {"source": "matrix", "root": str(tmp_path), "subjects": ["sub-01"], "rois": ["all"],
                            "matrix": {"file": file, **matrix}},
           "work_dir": str(tmp_path / "work"), "results_dir": str(tmp_path / "results")}
    cfg["features"] = {**TINY["features"], "input_size": 32}
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("kind,extra", [("npz", {}), ("mat5", {}), ("mat73", {}), ("mat5_stack", {"sample_axis": -1}),
                                        ("mat5_columns", {"sample_axis": -1, "voxel_sample_axis": 1})])
def test_every_layout_reads_the_same_images_and_voxels(tmp_path, kind, extra):
    from shared import matrix_data
    from shared.datasets import DataSource, load_split, split_image_names, split_images

    suffix = ".npz" if kind == "npz" else ".mat"
    truth = write_matrix_file(tmp_path / f"set{suffix}", kind)
    cfg = load_config(_config(tmp_path, f"set{suffix}", **extra))
    imgs = matrix_data.images(DataSource.of(cfg), "sub-01", "train")
    assert imgs.shape == (60, SIDE, SIDE, 1)
    np.testing.assert_allclose(imgs[..., 0], truth["train"], atol=1e-6)  # the marked pixel stayed at row 2, column 5
    rgb = split_images(DataSource.of(cfg), "test", split_image_names(DataSource.of(cfg), "test")[:3], 32)
    assert rgb.shape == (3, 3, 32, 32) and np.array_equal(rgb[:, 0], rgb[:, 2])
    d = load_split(DataSource.of(cfg), "sub-01", "test", "all", average=True)
    np.testing.assert_allclose(d.X, truth["X_test"], rtol=1e-5)
    assert list(d.names) == split_image_names(DataSource.of(cfg), "test")


def test_count_mismatch_and_missing_variables_are_refused(tmp_path):
    from shared.datasets import DataSource, check_inputs

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "bad.npz", X_train=rng.standard_normal((10, 5)), X_test=rng.standard_normal((3, 5)),
             Y_train=rng.random((9, 16)), Y_test=rng.random((3, 16)))
    cfg = load_config(_config(tmp_path, "bad.npz"))
    with pytest.raises(UserError, match="10 rows but there are 9 train images"):
        check_inputs(DataSource.of(cfg), cfg.decoder.folds_needed)
    np.savez(tmp_path / "columns.npz", X_train=rng.standard_normal((5, 9)), X_test=rng.standard_normal((5, 3)),
             Y_train=rng.random((9, 16)), Y_test=rng.random((3, 16)))
    with pytest.raises(UserError, match="samples are on the other axis; set data.matrix.voxel_sample_axis: 1"):
        check_inputs(DataSource.of(load_config(_config(tmp_path, "columns.npz"))), 2)
    cfg = load_config(_config(tmp_path, "bad.npz", train_images="images"))
    with pytest.raises(UserError, match="no variable 'images'.*X_test, X_train, Y_test, Y_train"):
        check_inputs(DataSource.of(cfg), cfg.decoder.folds_needed)


def _cli(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_matrix_dataset_runs_through_both_stages_and_compare(tmp_path):
    """Both stages on a matrix file (run by compare, each in a process of its own, as `run` would: the config
    unchanged in `both layers`), two variants side by side, and the shipped comparison of the published methods."""
    import json

    write_matrix_file(tmp_path / "digits.mat", "mat73")
    config = _config(tmp_path, "digits.mat")
    # two variants side by side (each method against the same variant's generator: test_compare's pairing test)
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "matrix", "base": "matrix.yaml", "also": ["pixel_ridge"],
                                    "variants": {"both layers": {}, "fc7 only": {"generator.condition_layers": ["fc7"]}}}))
    r = _cli(tmp_path, "stage2_generate", "compare", "--config", str(spec))
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "results" / "compare" / "matrix"
    runs = {v["name"]: v for v in json.loads((out / "compare.json").read_text())["variants"]}
    results = tmp_path / runs["both layers"]["results"]
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["reconstruction_info"]["grayscale"] is True
    assert set(metrics["reconstruction"]["sub-01"]) >= {"wgan_gp", "pixel_ridge", "nearest_train"}
    assert (results / "reconstructions" / "sub-01" / "all" / "test" / "wgan_gp.h5").is_file()
    assert (out / "table.md").read_text().count("| wgan_gp |") == 2
    stats = (out / "stats.md").read_text()
    assert "| fc7 only | wgan_gp | sub-01 | all | both layers (all) | 8 |" in stats
    for variant in ("both layers", "fc7 only"):
        assert f"| {variant} | pixel_ridge | sub-01 | all | wgan_gp (same variant) | 8 |" in stats
    methods = ["inversion_dgn", "inversion_pixels", "end_to_end", "latent_regression", "vae"]
    # the shipped comparison of the published methods, over this dataset instead of the demo (CPU budgets cut)
    shipped = Path(__file__).resolve().parents[1] / "configs" / "ablations" / "methods.yaml"
    r = _cli(tmp_path, "stage2_generate", "compare", "--config", str(shipped), "--base", str(config), "--seeds", "1",
             "--set", "data.rois=[all]", "--set", "generator.iterations=4", "--set", "methods.inversion_iterations=5",
             "--set", "methods.coder_iterations=10", "--set", "methods.latent_tune_steps=4")
    assert r.returncode == 0, r.stderr[-3000:]
    table = (tmp_path / "results" / "compare" / "methods_matrix" / "table.md").read_text()
    for method in ("wgan_gp", *methods, "pixel_ridge", "nearest_train"):
        assert table.count(f"| {method} |") == 1, method
    stats = (tmp_path / "results" / "compare" / "methods_matrix" / "stats.md").read_text()
    assert all(f"| demo | {method} | sub-01 | all | wgan_gp (same variant) | 8 |" in stats for method in methods)


def test_pixel_values_are_scaled_like_the_training_images(tmp_path):
    from shared import matrix_data
    from shared.datasets import DataSource

    rng = np.random.default_rng(0)
    vox = {"X_train": rng.standard_normal((6, 5)), "X_test": rng.standard_normal((2, 5))}
    # 8-bit values stored as int64 (NumPy's default integer)
    np.savez(tmp_path / "int.npz", **vox, Y_train=np.tile(np.arange(0, 256, 16), (6, 1)).astype(np.int64),
             Y_test=np.full((2, 16), 128, dtype=np.int64))
    cfg = load_config(_config(tmp_path, "int.npz"))
    assert matrix_data.images(DataSource.of(cfg), "sub-01", "train").max() == pytest.approx(240 / 255)
    assert matrix_data.images(DataSource.of(cfg), "sub-01", "test").max() == pytest.approx(128 / 255)
    # float values outside [0, 1]: the test images use the training images' range, not their own
    np.savez(tmp_path / "float.npz", **vox, Y_train=np.linspace(-2.0, 2.5, 96).reshape(6, 16),
             Y_test=np.full((2, 16), 0.25))
    cfg = load_config(_config(tmp_path, "float.npz"))
    train, test = (matrix_data.images(DataSource.of(cfg), "sub-01", "train"),
                   matrix_data.images(DataSource.of(cfg), "sub-01", "test"))
    assert train.min() == pytest.approx(0) and train.max() == pytest.approx(1)
    assert test.max() == pytest.approx((0.25 + 2.0) / 4.5)


# ------------------------------------------------------------------ repeated stimuli: one stimulus, many trials

def write_repeated_file(path: Path, kind: str, n_images: int = 20, reps: int = 3, n_test: int = 6, test_reps: int = 2,
                        seed: int = 1) -> dict:
    """Single trials of a few binary images, each shown several times in shuffled order (as small public sets
    ship them), with a fresh noise draw per trial; ``kind``: 'npz' (C order rows) or 'mat5' (column-major rows).
    Returns the images, the image shown in each trial (``*_index``) and the voxels."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((49, 150))
    tr, te = (_images(rng, n_images) > 0.5).astype(np.uint8), (_images(rng, n_test) > 0.5).astype(np.uint8)
    assert len(np.unique(tr.reshape(n_images, -1), axis=0)) == n_images  # distinct images
    tr_index = rng.permutation(np.repeat(np.arange(n_images), reps))
    te_index = rng.permutation(np.repeat(np.arange(n_test), test_reps))
    data = {"X_train": _voxels(rng, tr[tr_index].astype(float), w), "X_test": _voxels(rng, te[te_index].astype(float), w)}
    order = "C" if kind == "npz" else "F"
    rows = {"Y_train": np.stack([im.ravel(order=order) for im in tr[tr_index]]),
            "Y_test": np.stack([im.ravel(order=order) for im in te[te_index]])}
    if kind == "npz":
        np.savez(path, **data, **rows)
    elif kind == "mat5":
        savemat(path, {**data, **rows})
    else:
        raise ValueError(kind)
    return {"train": tr, "test": te, "train_index": tr_index, "test_index": te_index, **data}


@pytest.mark.parametrize("kind", ["npz", "mat5"])
def test_repeated_images_are_one_stimulus_named_by_their_pixels(tmp_path, kind, caplog):
    from shared.datasets import DataSource, load_split, split_image_names, split_images

    suffix = ".npz" if kind == "npz" else ".mat"
    truth = write_repeated_file(tmp_path / f"rep{suffix}", kind)
    cfg = load_config(_config(tmp_path, f"rep{suffix}"))
    with caplog.at_level(logging.INFO, logger="shared.matrix_data"):
        names = split_image_names(DataSource.of(cfg), "train")
        assert split_image_names(DataSource.of(cfg), "train") == names  # asked again: the same names, logged once
        trials = load_split(DataSource.of(cfg), "sub-01", "train", "all", average=False)
        images = load_split(DataSource.of(cfg), "sub-01", "train", "all", average=True)
    first = list(dict.fromkeys(truth["train_index"]))  # images in order of first appearance
    assert len(names) == len(set(names)) == 20 and all(re.fullmatch(r"train_[0-9a-f]{10}", n) for n in names)
    np.testing.assert_array_equal(split_images(DataSource.of(cfg), "train", names, SIDE)[:, 0], truth["train"][first])
    # the name is the digest of the decoded pixels (shape as int64, pixels as float32, little-endian, C order),
    # so the .npz and the .mat of the same image give it the same name
    pixels = truth["train"][first[0]].astype("<f4")[..., None]
    digest = hashlib.sha256(np.array(pixels.shape, "<i8").tobytes() + pixels.tobytes()).hexdigest()
    assert names[0] == f"train_{digest[:10]}"
    # one row per trial, repeated names; averaged: one row per image in split_image_names order
    name_of = dict(zip(first, names))
    assert list(trials.names) == [name_of[i] for i in truth["train_index"]]
    np.testing.assert_allclose(trials.X, truth["X_train"], rtol=1e-6)
    assert list(images.names) == names
    expected = np.stack([truth["X_train"][truth["train_index"] == i].mean(axis=0) for i in first])
    np.testing.assert_allclose(images.X, expected, rtol=1e-5, atol=1e-6)
    test = load_split(DataSource.of(cfg), "sub-01", "test", "all", average=True)
    first_test = list(dict.fromkeys(truth["test_index"]))
    assert list(test.names) == split_image_names(DataSource.of(cfg), "test") and len(test.names) == 6
    np.testing.assert_allclose(test.X, np.stack([truth["X_test"][truth["test_index"] == i].mean(axis=0)
                                                 for i in first_test]), rtol=1e-5, atol=1e-6)
    logged = [r.getMessage() for r in caplog.records if "distinct images" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith("train: 60 trials of 20 distinct images")


def test_cross_validation_folds_keep_every_repeat_of_an_image_on_one_side(tmp_path):
    from shared.datasets import DataSource, load_split, split_image_names
    from shared.ridge import ImageFolds

    truth = write_repeated_file(tmp_path / "rep.npz", "npz")
    cfg = load_config(_config(tmp_path, "rep.npz"), ["decoder.cv_folds=5"])
    train = load_split(DataSource.of(cfg), "sub-01", "train", "all", average=False)
    train_names = split_image_names(DataSource.of(cfg), "train")
    # the folds exactly as stage1_decode.decode.decode_subject_roi makes them from the names of the trials
    img_index = {n: i for i, n in enumerate(train_names)}
    folds = ImageFolds(np.array([img_index[n] for n in train.names]), len(train_names), cfg.decoder.cv_folds, cfg.seed)
    shown = truth["train_index"]  # the image really shown in each trial (what a leak would share)
    assert len(folds) == 5
    seen: set = set()
    for k in range(len(folds)):
        held, trained = set(shown[folds.held_trials[k]]), set(shown[folds.train_trials(k)])
        assert held and not held & trained, f"fold {k}: images on both sides"
        assert not held & seen, f"fold {k}: images held out by an earlier fold too"
        seen |= held
        inner = folds.inner(k)  # the nested folds that choose fold k's penalty
        for j in range(len(inner)):
            inner_held = set(shown[inner.held_trials[j]])
            assert not inner_held & set(shown[inner.train_trials(j)]) and not inner_held & held
    assert seen == set(range(20))
    # out-of-fold rows are stimuli, each once
    assert [train_names[i] for i in folds.present] == train_names


def test_stage1_on_repeated_trials_reports_their_reliability(tmp_path):
    from shared.datasets import DataSource, split_image_names
    from shared.holdout import validation_split
    from shared.store import ExperimentStore

    write_repeated_file(tmp_path / "rep.mat", "mat5")
    config = _config(tmp_path, "rep.mat")
    r = _cli(tmp_path, "stage1_decode", "run", "--config", str(config))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())["data"]["sub-01"]["all"]
    assert isinstance(data["reliability_median"], float) and 0 < data["reliability_median"] <= 1, data
    # decoders fit 18 of the 20 images (54 trials): the validation hold-out's 2 are predicted like test images
    assert (data["n_train_trials"], data["n_train_images"]) == (54, 18)
    assert "train: 60 trials of 20 distinct images" in r.stderr
    # features of each stimulus once; out-of-fold decoded features per stimulus
    cfg = load_config(config)
    store, names = ExperimentStore(cfg), split_image_names(DataSource.of(cfg), "train")
    with store.open_true("fc7", "train") as arr:
        assert list(arr.names) == names
    fit, held = validation_split(names, cfg.eval.validation_fraction, cfg.seed)
    with store.open_decoded("sub-01", "all", "fc7", "train_oof") as arr:
        assert sorted(arr.names) == sorted(fit) and len(held) == 2
    with store.open_decoded("sub-01", "all", "fc7", "validation") as arr:
        assert sorted(arr.names) == sorted(held)


def test_subjects_may_show_the_same_stimuli_in_another_trial_order(tmp_path):
    from shared.datasets import DataSource, check_inputs, load_split, split_image_names

    truth = write_repeated_file(tmp_path / "rep_sub-01.npz", "npz")
    with np.load(tmp_path / "rep_sub-01.npz") as z:
        arrays = {k: z[k] for k in z.files}
    order = np.random.default_rng(5).permutation(len(arrays["X_train"]))
    np.savez(tmp_path / "rep_sub-02.npz", **{**arrays, "X_train": arrays["X_train"][order] + 1.0,
                                             "Y_train": arrays["Y_train"][order]})
    cfg = load_config(_config(tmp_path, "rep_{subject}.npz"), ["data.subjects=[sub-01,sub-02]"])
    check_inputs(DataSource.of(cfg), cfg.decoder.folds_needed)
    first = load_split(DataSource.of(cfg), "sub-01", "train", "all", average=True)
    second = load_split(DataSource.of(cfg), "sub-02", "train", "all", average=True)
    assert list(first.names) == list(second.names) == split_image_names(DataSource.of(cfg), "train")
    np.testing.assert_allclose(second.X, first.X + 1.0, rtol=1e-5, atol=1e-5)  # each image's own trials, reordered
    # a subject shown another image is refused, naming its file
    other, trials_of_one = arrays["Y_train"].copy(), truth["train_index"] == truth["train_index"][0]
    other[trials_of_one, :2] = 1 - other[trials_of_one, :2]  # another image in place of one (in all its trials)
    np.savez(tmp_path / "rep_sub-02.npz", **{**arrays, "Y_train": other})
    cfg = load_config(_config(tmp_path, "rep_{subject}.npz"), ["data.subjects=[sub-01,sub-02]"])
    with pytest.raises(UserError, match="train images of .*rep_sub-02.npz differ"):
        check_inputs(DataSource.of(cfg), cfg.decoder.folds_needed)


def test_test_images_that_are_also_training_images_are_named(tmp_path):
    """Some public sets reuse training images as test images: the overlap is found by pixels and named
    (stage 2 logs it and summary.md says it), because nearest_train retrieves those exactly."""
    from shared.datasets import DataSource
    from shared.matrix_data import names as stimulus_names, seen_in_training

    truth = write_matrix_file(tmp_path / "a.npz", "npz")
    clean = load_config(_config(tmp_path, "a.npz"))
    assert seen_in_training(DataSource.of(clean), "test") == []
    d = dict(np.load(tmp_path / "a.npz"))
    d["Y_test"][[1, 4]] = d["Y_train"][[7, 30]]  # two test images are training images
    np.savez(tmp_path / "b.npz", **d)
    src = DataSource.of(load_config(_config(tmp_path, "b.npz")))
    seen = seen_in_training(src, "test")
    test_names = stimulus_names(src, "test")
    assert seen == [test_names[1], test_names[4]]
    assert truth["test"].shape[0] == 8
