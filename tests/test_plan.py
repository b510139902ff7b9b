"""``stage1_decode plan``: the fingerprint of a dataset and the config both stages then run.

Each simulated preset's own data plans to that preset's shipped settings; a matrix file laid out unlike the
presets (other variable names, no split called 'test', image stacks with the samples last) is read, planned
and run through both stages; a file whose test images are training images is flagged; names that cannot be
told apart are one line naming the --set to pass."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy.io import savemat

from shared.config import load_config, to_dict
from shared.errors import UserError
from shared.simulate.lab_file import write_lab_file
from stage1_decode.plan import guess_matrix

from conftest import ROOT, run_cli

PLANNED = ("features", "decoder", "generator", "eval", "methods")


@pytest.mark.parametrize("preset", ["small_strokes", "binary_shapes", "demo"])
def test_each_preset_plans_to_its_shipped_settings(tmp_path, preset):
    shipped = load_config(ROOT / "configs" / f"{preset}.yaml")
    root = tmp_path / "data"
    r = run_cli("stage1_decode", "simulate", "--config", str(ROOT / "configs" / f"{preset}.yaml"),
                "--set", f"data.root={root}")
    assert r.returncode == 0, r.stderr[-2000:]
    data = root if shipped.data.source == "simulated" and shipped.simulation.format == "bdata" else \
        root / shipped.data.matrix.file.format(subject="sub-01")
    out = tmp_path / "planned.yaml"
    r = run_cli("stage1_decode", "plan", "--data", str(data), "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    planned = load_config(out)
    for section in PLANNED:
        assert to_dict(planned)[section] == to_dict(shipped)[section], section
    assert (planned.data.subjects, planned.data.rois) == (shipped.data.subjects, shipped.data.rois)
    assert planned.data.source == shipped.simulation.format  # the files as written, read as a lab's would be
    assert "single-trial reliability" in r.stdout and "# Fingerprint:" in out.read_text()


def test_a_matrix_file_in_another_layout_is_planned_and_runs_through_both_stages(tmp_path):
    write_lab_file(tmp_path / "lab_recording.mat")
    out = tmp_path / "planned.yaml"
    r = run_cli("stage1_decode", "plan", "--data", str(tmp_path / "lab_recording.mat"), "--out", str(out),
                "--device", "cpu", "--set", f"work_dir={tmp_path / 'work'}", "--set",
                f"results_dir={tmp_path / 'results'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "training: 40 images, 40 trials (1 per image)" in r.stdout
    assert "test 'test': 8 images, 16 trials (2 per image)" in r.stdout and "20 x 20 px, grey" in r.stdout
    cfg = load_config(out)
    m = cfg.data.matrix
    assert (m.train_voxels, m.test_voxels, m.train_images, m.test_images, m.sample_axis) == \
        ("brain_fit", "brain_eval", "stims_fit", "stims_eval", -1)
    assert (cfg.generator.image_size, cfg.decoder.cv_folds, cfg.decoder.alphas[0]) == (20, 4, 10.0)
    assert "WARNING" not in out.read_text()
    # both stages on the planned file; only the budget is cut for the test's time (the full budget: docs)
    quick = ["--set", "features.layers=[conv3_4,fc7]", "--set", "generator.condition_layers=[conv3_4,fc7]",
             "--set", "generator.consistency_layers=[]", "--set", "generator.base_channels=8", "--set",
             "generator.iterations=4", "--set", "generator.tick_every=2", "--set", "eval.judge_input_size=64"]
    for module in ("stage1_decode", "stage2_generate"):
        r = run_cli(module, "run", "--config", str(out), *quick)
        assert r.returncode == 0, r.stderr[-3000:]
    metrics = yaml.safe_load((tmp_path / "results" / "lab_recording" / "metrics.json").read_text())
    assert len(metrics["reconstruction"]["sub-01"]["wgan_gp"]) > 0


def test_test_images_that_are_training_images_are_flagged(tmp_path):
    write_lab_file(tmp_path / "reused.mat", test_from_train=True)
    out = tmp_path / "planned.yaml"
    r = run_cli("stage1_decode", "plan", "--data", str(tmp_path / "reused.mat"), "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WARNING: 8 of the 8 'test' test images are also training images" in r.stdout
    assert "8 of the 'test' test images are also training images" in out.read_text()


def test_names_that_cannot_be_told_apart_ask_for_a_flag(tmp_path):
    arrays = {"a": np.zeros((10, 5)), "b": np.zeros((4, 5)), "c": np.zeros((10, 16)), "d": np.zeros((4, 16))}
    with pytest.raises(UserError, match=r"train voxels: none match; .*--set data.matrix.train_voxels=NAME --set data.matrix.train_images=NAME"):
        guess_matrix(arrays)
    savemat(tmp_path / "plain.mat", arrays)
    r = run_cli("stage1_decode", "plan", "--data", str(tmp_path / "plain.mat"), "--out", str(tmp_path / "p.yaml"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--set data.matrix.train_voxels=NAME" in r.stderr
    # named by flags, it plans
    r = run_cli("stage1_decode", "plan", "--data", str(tmp_path / "plain.mat"), "--out", str(tmp_path / "p.yaml"),
                *[x for k, v in {"train_voxels": "a", "test_voxels": "b", "train_images": "c", "test_images": "d"}.items()
                  for x in ("--set", f"data.matrix.{k}={v}")])
    assert "cannot tell" not in r.stderr


def test_a_voxels_by_samples_file_with_holdout_names_is_planned():
    """MATLAB's usual layout: voxels x samples, image stacks with the samples last, the test split called holdout;
    the samples' axes come from the counts, and arrays it cannot name are all asked for in one line."""
    rng = np.random.default_rng(0)
    arrays = {"fmri_train": rng.random((150, 40)), "fmri_holdout": rng.random((150, 24)),
              "pics_train": rng.random((24, 24, 40)), "pics_holdout": rng.random((24, 24, 24))}
    assert guess_matrix(arrays) == {
        "data.matrix.train_voxels": "fmri_train", "data.matrix.test_voxels": "fmri_holdout",
        "data.matrix.train_images": "pics_train", "data.matrix.test_images": "pics_holdout",
        "data.matrix.voxel_sample_axis": 1, "data.matrix.sample_axis": -1}
    with pytest.raises(UserError, match=r"voxel_sample_axis' must be one of \[0, 1\]; 2 was given"):
        guess_matrix(arrays, {"data.matrix.voxel_sample_axis": 2})  # a --set value out of range: one line
    arrays["fmri_holdout"] = rng.random((24, 150))  # the test voxels stored the other way round
    with pytest.raises(UserError, match="training voxels hold their samples on axis 1, the test voxels fmri_holdout"):
        guess_matrix(arrays)
    arrays["fmri_holdout"] = rng.random((150, 23))
    with pytest.raises(UserError, match=r"test voxels fmri_holdout \(150, 23\) and images pics_holdout .* share no"):
        guess_matrix(arrays)
    odd = {"a": arrays["fmri_train"], "b": arrays["pics_train"], "fmri_holdout": arrays["fmri_holdout"],
           "pics_holdout": arrays["pics_holdout"]}
    with pytest.raises(UserError, match=r"train voxels: none match; train images: none match\) .*"
                                        r"pass --set data.matrix.train_voxels=NAME --set data.matrix.train_images=NAME$"):
        guess_matrix(odd)


def test_an_existing_config_is_kept(tmp_path):
    write_lab_file(tmp_path / "x.mat")
    (tmp_path / "p.yaml").write_text("keep: me\n")
    r = run_cli("stage1_decode", "plan", "--data", str(tmp_path / "x.mat"), "--out", str(tmp_path / "p.yaml"))
    assert r.returncode == 2 and "--force" in r.stderr and (tmp_path / "p.yaml").read_text() == "keep: me\n"
