"""End to end through the command line, on a tiny simulated experiment and on a BData
file built directly with bdpy in the real layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", stage, *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=600)


def test_tiny_experiment_end_to_end_and_resume(tiny_config):
    cfg = yaml.safe_load(tiny_config.read_text())
    results = Path(cfg["results_dir"]) / "tiny"
    r1 = cli("stage1_decode", "run", "--config", str(tiny_config))
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = cli("stage2_generate", "run", "--config", str(tiny_config))
    assert r2.returncode == 0, r2.stderr[-2000:]
    metrics = json.loads((results / "metrics.json").read_text())
    for layer in ("conv3_4", "fc7"):
        entry = metrics["decoding"]["sub-01"]["VC"][layer]
        assert {"profile_corr", "pattern_corr", "pairwise_id"} <= set(entry)
        assert 0 <= entry["pairwise_id"] <= 1
        assert {"profile_corr", "pattern_corr", "pairwise_id", "fold_alphas"} == set(entry["train_oof"])
    for method in ("wgan_gp", "pixel_ridge", "nearest_train"):
        entry = metrics["reconstruction"]["sub-01"][method]
        assert {"pairwise_id_pixel", "pixcorr", "ssim"} <= set(entry)
    assert 0.05 <= metrics["data"]["sub-01"]["VC"]["reliability_median"] <= 0.30
    assert "random:0 (untrained" in metrics["info"]["weights_label"]
    for name in ("grid.png", "summary.md", "decoding.md", "decoding.csv", "reconstruction.md", "decoding.png"):
        assert (results / name).is_file(), name
    summary = (results / "summary.md").read_text()
    assert "| sub-01 | wgan_gp |" in summary and "random:0 (untrained" in summary
    runs = sorted(p.name for p in (results / "runs").iterdir())
    assert runs == ["stage1-001", "stage2-001"]
    assert metrics["runs"] == {"stage1": "runs/stage1-001", "stage2": "runs/stage2-001"}
    stats = [json.loads(line) for line in (results / "runs/stage2-001/stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4]
    # a rerun resumes: nothing is decoded or trained again, results are the same
    r3 = cli("stage1_decode", "run", "--config", str(tiny_config))
    assert r3.returncode == 0 and "already decoded" in r3.stderr
    r4 = cli("stage2_generate", "run", "--config", str(tiny_config))
    assert r4.returncode == 0 and "reusing it" in r4.stderr
    again = json.loads((results / "metrics.json").read_text())
    assert again["decoding"] == metrics["decoding"]
    assert again["reconstruction"]["sub-01"]["wgan_gp"]["pixcorr"] == metrics["reconstruction"]["sub-01"]["wgan_gp"]["pixcorr"]
    # more iterations continue the same training from its last checkpoint
    r5 = cli("stage2_generate", "run", "--config", str(tiny_config), "--set", "generator.iterations=6")
    assert r5.returncode == 0 and "resuming generator training at step 4" in r5.stderr
    extended = [json.loads(line) for line in (results / "runs/stage2-003/stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in extended] == [6]
    r6 = cli("stage2_generate", "run", "--config", str(tiny_config))  # fewer steps than trained: refused
    assert r6.returncode == 2 and "holds 6 generator steps" in r6.stderr
    # a changed setting invalidates what it affects: decoders for alphas, features for input size
    r7 = cli("stage1_decode", "run", "--config", str(tiny_config), "--set", "decoder.alphas=[10.0]")
    assert r7.returncode == 0 and "already decoded" not in r7.stderr and "true features of train: already" in r7.stderr
    after = json.loads((results / "metrics.json").read_text())
    assert "reconstruction" not in after and not (results / "grid.png").exists()  # stale: from other decoders
    r8 = cli("stage1_decode", "run", "--config", str(tiny_config), "--set", "features.input_size=48")
    assert r8.returncode == 0 and "recomputing conv3_4 train" in r8.stderr and "already decoded" not in r8.stderr


def test_sparse_decoder_runs_writes_out_of_fold_features_and_resumes(tiny_config):
    cfg = yaml.safe_load(tiny_config.read_text())
    sets = ["--set", "decoder.kind=sparse", "--set", "decoder.n_voxels=40", "--set", "decoder.cv_units=100",
            "--set", "features.layers=[fc7]", "--set", "generator.condition_layers=[fc7]"]
    r1 = cli("stage1_decode", "run", "--config", str(tiny_config), *sets)
    assert r1.returncode == 0, r1.stderr[-2000:]
    metrics = json.loads((Path(cfg["results_dir"]) / "tiny" / "metrics.json").read_text())
    entry = metrics["decoding"]["sub-01"]["VC"]["fc7"]
    assert entry["voxels_per_unit"] == 40 and entry["alpha_per"] == "layer"
    assert -1 <= entry["train_oof"]["profile_corr"] <= 1
    decoded = Path(cfg["work_dir"]) / "tiny/features/decoded/vgg19-random0/sparse-40/sub-01/VC/fc7"
    assert {p.name for p in decoded.glob("*.h5")} == {"natural.h5", "train_oof.h5", "validation.h5"}
    r2 = cli("stage1_decode", "run", "--config", str(tiny_config), *sets)
    assert r2.returncode == 0 and "already decoded" in r2.stderr
    r3 = cli("stage1_decode", "run", "--config", str(tiny_config), *sets, "--set", "decoder.alpha_per=unit")
    assert r3.returncode == 2 and "needs decoder.kind=ridge" in r3.stderr


def test_user_errors_are_one_line_with_status_2(tiny_config, tmp_path):
    r = cli("stage1_decode", "run", "--config", str(tiny_config), "--set", "decoder.alpha=3")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "unknown config key 'decoder.alpha'; did you mean 'decoder.alphas'?" in r.stderr
    r = cli("stage2_generate", "run", "--config", str(tiny_config))  # stage 1 has not run
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "run stage 1 first" in r.stderr.strip().splitlines()[-1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: bdata, root: " + str(tmp_path / "nowhere") + "}\n")
    r = cli("stage1_decode", "run", "--config", str(bad))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_prints_resolved_config(tiny_config):
    r = cli("stage2_generate", "run", "--config", str(tiny_config), "--dry-run", "--set", "generator.lr=0.001")
    assert r.returncode == 0
    cfg = yaml.safe_load(r.stdout)
    assert cfg["generator"]["lr"] == 0.001 and cfg["generator"]["n_critic"] == 2 and cfg["experiment"] == "tiny"


def _write_real_layout(root: Path, rng: np.random.Generator) -> None:
    """A BData file as the lab distributes them, written with bdpy directly (no simulator)."""
    import bdpy
    from PIL import Image

    n_img, reps, n_vox = 30, 2, 80
    stems = {"train": [f"n0{1000 + i}_{i}" for i in range(n_img)], "test": [f"n0{2000 + i}_{i}" for i in range(6)]}
    files = {"train": "sub-02_perceptionNaturalImageTraining_original_VC.h5",
             "test": "sub-02_perceptionNaturalImageTest_original_VC.h5"}
    for split, names in stems.items():
        folder = root / "images" / split
        folder.mkdir(parents=True)
        imgs = rng.uniform(size=(len(names), 40, 48, 3))  # not square: the loader crops
        for name, img in zip(names, imgs):
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{name}.JPEG")
        (root / f"{split}_list.tsv").write_text("".join(f"{n}.JPEG\t{i + 1}\n" for i, n in enumerate(names)))
        r = reps if split == "train" else 3
        index = np.tile(np.arange(1, len(names) + 1), r)
        mean_img = imgs.mean(axis=(1, 2, 3))
        X = np.outer(mean_img[index - 1], rng.normal(size=n_vox)) + rng.normal(size=(len(index), n_vox))
        bd = bdpy.BData()
        bd.add(X, "VoxelData")
        bd.add_metadata("ROI_hV4", (np.arange(n_vox) < 20).astype(float), "1 = hV4", where="VoxelData")
        bd.add_metadata("ROI_VC", np.ones(n_vox), "1 = VC", where="VoxelData")
        bd.add(index.astype(float), "image_index")
        bd.add(np.repeat(np.arange(r), len(names)).astype(float), "Run")
        bd.save(str(root / files[split]))


def test_bdata_in_the_real_layout_runs_through_stage1(tmp_path, rng):
    root = tmp_path / "real"
    root.mkdir()
    _write_real_layout(root, rng)
    cfg = {
        "experiment": "real", "work_dir": str(tmp_path / "work"), "results_dir": str(tmp_path / "results"),
        "data": {"source": "bdata", "root": str(root), "subjects": ["sub-02"], "rois": ["VC", "V4"],
                 "train": {"bdata": "{subject}_perceptionNaturalImageTraining_original_VC.h5",
                           "image_list": "train_list.tsv", "images": "images/train"},
                 "test": {"natural": {"bdata": "{subject}_perceptionNaturalImageTest_original_VC.h5",
                                      "image_list": "test_list.tsv", "images": "images/test"}}},
        "features": {"network": "alexnet", "weights": "random:0", "layers": ["conv1", "fc8"], "input_size": 64},
        "decoder": {"alphas": [1.0, 100.0], "cv_folds": 2},
        "generator": {"condition_layers": ["conv1"]},
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = cli("stage1_decode", "run", "--config", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "results/real/metrics.json").read_text())
    assert set(metrics["decoding"]["sub-02"]) == {"VC", "V4"}
    assert metrics["data"]["sub-02"]["V4"]["n_voxels"] == 20  # ROI_hV4 found for 'V4'
    assert metrics["data"]["sub-02"]["VC"]["n_train_trials"] == 54  # 6 of 60 images held out for validation


def test_image_lists_in_either_column_order(tmp_path):
    from shared.datasets import read_image_list

    (tmp_path / "a.tsv").write_text("n01_1.JPEG\t1\nn02_2.JPEG\t2\n")
    (tmp_path / "b.csv").write_text("index,file\n1,n01_1.JPEG\n2,n02_2\n")
    assert read_image_list(tmp_path / "a.tsv") == read_image_list(tmp_path / "b.csv") == {1: "n01_1", 2: "n02_2"}


def test_a_refused_config_imports_no_torch_and_each_verb_lists_its_own_options(tmp_path):
    """The command line imports only the verb it runs (``shared.cli.Lazy``): a config refused when it is read
    never imports torch, and a verb's own options are still in its --help."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator: {iteratoins: 4}\n")
    code = ("import sys; from shared.cli import main; from stage2_generate.cli import DESCRIPTION, VERBS; "
            f"rc = main('npp-generate', DESCRIPTION, VERBS, ['run', '--config', {str(bad)!r}]); "
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.stdout.split() == ["2", "False"] and "iteratoins" in r.stderr, r.stderr[-2000:]
    for module, verb, option in (("stage2_generate", "compare", "--jobs"), ("stage2_generate", "export", "--figure"),
                                 ("stage1_decode", "plan", "--data"), ("stage1_decode", "run", "--shard")):
        r = subprocess.run([sys.executable, "-m", module, verb, "--help"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
        assert r.returncode == 0 and option in r.stdout, (module, verb)
