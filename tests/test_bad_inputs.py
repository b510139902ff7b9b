"""Every bad input is refused by the real command line: exit status 2, one error line that names the
problem and the fix, no traceback, and no file under the work and results folders new or changed.

Each case changes one thing of a finished tiny experiment (a file, a setting, a store array), runs
the command in a subprocess and puts the file back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np
import pytest
import yaml

from conftest import Finished, run_cli, write_tiny_config


CASES: dict[str, Callable] = {}


def case(name: str):
    """Register a case: a generator that prepares the bad input, yields ``(module, args, expected text)``
    and restores what it changed."""
    def register(fn):
        CASES[name] = contextlib.contextmanager(fn)
        return fn
    return register


@contextlib.contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """Put ``paths`` back as they were (bytes and modification time), or remove them if they were absent."""
    saved = {p: (p.read_bytes(), os.stat(p)) if p.is_file() else None for p in paths}
    try:
        yield
    finally:
        for p, was in saved.items():
            if was is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(was[0])
                os.utime(p, ns=(was[1].st_atime_ns, was[1].st_mtime_ns))


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folders``: size and modification time (a folder's changes when an
    entry is added or removed)."""
    return {str(p): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns) for f in folders if f.exists()
            for p in [f, *sorted(f.rglob("*"))]}


def train_bdata(env: Finished) -> Path:
    return env.data / "sub-01_perceptionNaturalImageTraining_original_VC.h5"


def natural_bdata(env: Finished) -> Path:
    return env.data / "sub-01_perceptionNaturalImageTest_original_VC.h5"


def stage1(env: Finished, *extra: str) -> tuple[str, list[str]]:
    return "stage1_decode", ["run", "--config", str(env.config), *extra]


def stage2(env: Finished, *extra: str) -> tuple[str, list[str]]:
    return "stage2_generate", ["run", "--config", str(env.config), *extra]


def _set_voxel(path: Path, value: float, trial: int = 0) -> None:
    """Write ``value`` into one VC voxel of one trial of a BData file (bdpy: columns with ROI_VC = 1)."""
    import bdpy

    bd = bdpy.BData(str(path))
    columns = np.flatnonzero(bd.metadata.get("ROI_VC", "value") == 1)
    with h5py.File(path, "r+") as f:
        data = f["dataset"][()]
        data[trial, columns[3]] = value
        f["dataset"][...] = data


def _store_file(env: Finished, layer: str = "conv3_4", split: str = "train") -> Path:
    return env.work / "features" / "true" / "vgg19-random0" / layer / f"{split}.h5"


# ---------------------------------------------------------------------- configs and settings

def _setting_case(name: str, stage, setting: str, expect: str) -> None:
    """A case that is one bad ``--set`` on the finished experiment's config."""
    def prepare(env, tmp):
        yield *stage(env, "--set", setting), expect
    case(name)(prepare)


for _name, _stage, _setting, _expect in [
    ("config key typo", stage1, "decoder.alpha=3", "unknown config key 'decoder.alpha'; did you mean 'decoder.alphas'?"),
    ("wrong type", stage1, "generator.iterations=many", "'generator.iterations' must be an integer"),
    ("negative penalty", stage1, "decoder.alphas=[-10.0]", "'decoder.alphas' must be positive"),
    ("zero penalty", stage1, "decoder.alphas=[0, 10.0]", "'decoder.alphas' must be positive"),
    ("unknown layer", stage1, "features.layers=[conv9_9]", "conv5_4"),  # the message lists the valid names
    ("set without a value", stage1, "decoder.alphas", "--set expects key=value"),
    ("fewer training images than folds", stage1, "decoder.cv_folds=61", "fewer than decoder.cv_folds=61"),
    ("experiment named like compare's folders", stage2, "experiment=compare", "'experiment' must not be 'compare'"),
]:
    _setting_case(_name, _stage, _setting, _expect)


@case("missing config file")
def _(env, tmp):
    yield "stage1_decode", ["run", "--config", str(tmp / "nowhere.yaml")], "does not exist"


@case("config not YAML")
def _(env, tmp):
    bad = tmp / "broken.yaml"
    bad.write_text("data: [subjects\n")
    yield "stage2_generate", ["run", "--config", str(bad)], "is not valid YAML"


# ---------------------------------------------------------------------- fMRI files and images

@case("file that is not HDF5")
def _(env, tmp):
    path = train_bdata(env)
    with restored(path):
        path.write_bytes(b"subject,trial,voxel\n1,1,0.5\n")
        yield *stage1(env), "is not an HDF5 file"


@case("truncated HDF5 file")
def _(env, tmp):
    path = natural_bdata(env)
    with restored(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        yield *stage1(env), "damaged or truncated HDF5 file"


@case("ROI not in the file")
def _(env, tmp):
    yield *stage1(env, "--set", "data.rois=[V7]"), "'data.rois' must be among ['FFA', 'HVC', 'LOC'"


@case("image_index without an image")
def _(env, tmp):
    path = env.data / "image_list_training.tsv"
    with restored(path):
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:-1]) + "\n")
        yield *stage1(env), f"uses image_index {len(lines)} which is not in"


@case("missing image")
def _(env, tmp):
    path = sorted((env.data / "images" / "training").iterdir())[5]
    with restored(path):
        path.unlink()
        yield *stage1(env), f"stimulus image {path.stem!r} not found"


@case("unreadable image")
def _(env, tmp):
    path = sorted((env.data / "images" / "test").iterdir())[2]
    with restored(path):
        path.write_bytes(b"<html>404 Not Found</html>")
        yield *stage1(env), "cannot be read"


@case("truncated image")
def _(env, tmp):
    path = sorted((env.data / "images" / "training").iterdir())[9]
    with restored(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        yield *stage1(env), f"stimulus image {path} cannot be read"


@case("damaged weights file")
def _(env, tmp):
    (tmp / "vgg19.pth").write_bytes(np.random.default_rng(0).bytes(5000))
    yield *stage1(env, "--set", f"features.weights={tmp / 'vgg19.pth'}"), "is not a vgg19 state dict"


@case("NaN voxels")
def _(env, tmp):
    path = train_bdata(env)
    with restored(path):
        _set_voxel(path, np.nan, trial=7)
        yield *stage1(env), "has 1 NaN or infinite voxel values in ROI 'VC'"


@case("infinite voxels")
def _(env, tmp):
    path = natural_bdata(env)
    with restored(path):
        _set_voxel(path, np.inf)
        yield *stage2(env), "NaN or infinite voxel values"


@case("matrix dataset with more images than voxel rows")
def _(env, tmp):
    rng = np.random.default_rng(0)
    np.savez(tmp / "lab.npz", X_train=rng.normal(size=(20, 30)), X_test=rng.normal(size=(5, 30)),
             Y_train=rng.uniform(size=(21, 64)), Y_test=rng.uniform(size=(5, 64)))
    config = write_tiny_config(env.folder, tmp, name="matrix_case.yaml", experiment="matrix_case")
    raw = yaml.safe_load(config.read_text())
    raw["data"] = {"source": "matrix", "root": str(tmp), "subjects": ["sub-01"], "rois": ["all"],
                   "matrix": {"file": "lab.npz"}}
    config.write_text(yaml.safe_dump(raw))
    try:
        yield "stage1_decode", ["run", "--config", str(config)], "has 20 rows but there are 21 train images"
    finally:
        config.unlink()


# ---------------------------------------------------------------------- feature store and checkpoints

@case("stage 2 before stage 1")
def _(env, tmp):
    yield *stage2(env, "--set", f"work_dir={tmp / 'empty'}"), "run stage 1 first"


def _store_case(env, attr: str, value, expect: str):
    path = _store_file(env)
    with restored(path):
        with h5py.File(path, "r+") as f:
            f["features"].attrs[attr] = value
        yield *stage2(env), expect


@case("store of another network")
def _(env, tmp):
    yield from _store_case(env, "network", "alexnet", "holds network='alexnet' but network='vgg19' was asked")


@case("store of another layer")
def _(env, tmp):
    yield from _store_case(env, "layer", "conv2_2", "holds layer='conv2_2' but layer='conv3_4' was asked")


@case("store of another input size")
def _(env, tmp):
    yield from _store_case(env, "input_size", 224, "holds input_size=224 but input_size=32 was asked")


@case("store of another stimulus set")
def _(env, tmp):
    path = _store_file(env, "fc7", "natural")
    with restored(path):
        with h5py.File(path, "r+") as f:
            names = f["names"][()]
            names[0] = b"n99999999_1"
            f["names"][...] = names
        yield *stage2(env), "has no row for stimulus"


@case("checkpoint of an incompatible generator")
def _(env, tmp):
    import torch

    from shared import checkpoints

    (path,) = env.work.glob("generator/*/generator.pt")
    with restored(path):
        state = checkpoints.load(path)
        first = next(iter(state["generator"]))
        state["generator"][first] = torch.zeros(3, 1)
        checkpoints.save(state, path, keep_previous=False)
        yield *stage2(env), "holds a generator of another architecture"


# ---------------------------------------------------------------------- compare, export, download

@case("compare matrix naming an unknown key")
def _(env, tmp):
    spec = tmp / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", "base": str(env.config), "variants": {"a": {}},
                                    "matrix": {"generator.seedz": [0, 1]}}))
    yield "stage2_generate", ["compare", "--config", str(spec)], "unknown config key 'generator.seedz'"


@case("compare variant with a bad input")
def _(env, tmp):
    spec = tmp / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", "base": str(env.config),
                                    "variants": {"base": {}, "area V7": {"data.rois": ["V7"]}}}))
    yield "stage2_generate", ["compare", "--config", str(spec)], "variant 'area V7': ROI 'V7' is not in"


@case("compare over a --base config that does not exist")
def _(env, tmp):
    spec = tmp / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", "base": str(env.config), "variants": {"a": {}}}))
    yield "stage2_generate", ["compare", "--config", str(spec), "--base", str(tmp / "mine.yaml")], \
        "--base config"


@case("export of a run that does not exist")
def _(env, tmp):
    yield "stage2_generate", ["export", "--config", str(env.config), "--set", "experiment=ghost"], \
        "no finished stage-2 results"


@case("download whose checksum does not match")
def _(env, tmp):
    from test_download import Figshare, figshare_files

    from stage1_decode.download import DIR_BDATA

    server = Figshare(figshare_files())
    server.corrupt.add(DIR_BDATA["sub-01"][1])
    config = tmp / "real.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": "bdata", "root": str(tmp / "dir")}, "work_dir": str(env.folder / "work"),
        "results_dir": str(env.folder / "results"),
        "download": {"api": f"http://127.0.0.1:{server.port}/v2", "timeout": 5, "retries": 1}}))
    try:
        yield "stage1_decode", ["download", "--config", str(config)], "MD5"
    finally:
        server.server.shutdown()


# ---------------------------------------------------------------------- the tests

def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_in_one_line_and_touches_nothing(name, tiny_finished, tmp_path):
    env = tiny_finished
    watched = (env.folder / "work", env.folder / "results")
    with CASES[name](env, tmp_path) as (module, args, expect):
        before = snapshot(*watched)
        r = run_cli(module, *args)
        after = snapshot(*watched)
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr[-3000:]
    assert expect in errors[0], errors[0]
    assert ";" in errors[0] or " rerun" in errors[0], f"no fix named: {errors[0]}"
    assert after == before, f"changed: {sorted(set(after.items()) ^ set(before.items()))[:3]}"
    assert not (tmp_path / "empty").exists()


def test_constant_training_voxels_are_ignored_and_reported_never_nan(tiny_finished, tmp_path):
    """Voxels with zero variance over the training trials are z-scored to 0 (documented), reported in
    metrics.json and the log; every decoded feature and score stays finite."""
    import bdpy

    env = tiny_finished
    path = train_bdata(env)
    with restored(path):
        bd = bdpy.BData(str(path))
        columns = np.flatnonzero(bd.metadata.get("ROI_VC", "value") == 1)[:4]
        with h5py.File(path, "r+") as f:
            data = f["dataset"][()]
            data[:, columns] = 1.5
            f["dataset"][...] = data
        config = write_tiny_config(tmp_path, env.data)
        r = run_cli("stage1_decode", "run", "--config", str(config), "--set", "features.layers=[fc7]",
                    "--set", "generator.condition_layers=[fc7]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 of 600 voxels are constant over the training trials" in r.stderr
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["data"]["sub-01"]["VC"]["n_constant_voxels"] == 4
    scores = metrics["decoding"]["sub-01"]["VC"]["fc7"]
    assert all(np.isfinite(scores[k]) for k in ("profile_corr", "pattern_corr", "pairwise_id")), scores
    for h5 in (tmp_path / "work").rglob("decoded/**/*.h5"):
        with h5py.File(h5) as f:
            assert np.isfinite(f["features"][()]).all(), h5
    shutil.rmtree(tmp_path / "work")
