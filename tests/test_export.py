"""export: figures and one HDF5 file from saved reconstructions alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import yaml
from PIL import Image

from stage2_generate.recon_files import read_reconstructions


def _cli(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_export_reproduces_the_stage2_grid_and_writes_shen_figure_and_hdf5(tmp_path, tiny_config):
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["data"]["rois"] = ["VC", "V1"]  # methods of the second ROI are keyed wgan_gp[V1] in metrics.json
    tiny_config.write_text(yaml.safe_dump(cfg))
    results = Path(cfg["results_dir"]) / cfg["experiment"]
    missing = _cli(tmp_path, "stage2_generate", "export", "--config", str(tiny_config))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "run python -m stage2_generate run" in \
        missing.stderr and "Traceback" not in missing.stderr
    assert not results.exists()  # the refusal wrote nothing
    for module in ("stage1_decode", "stage2_generate"):
        r = _cli(tmp_path, module, "run", "--config", str(tiny_config))
        assert r.returncode == 0, r.stderr[-2000:]
    # delete the stage-2 grid's inputs that export must not need: the data folder
    import shutil

    shutil.rmtree(cfg["data"]["root"])
    r = _cli(tmp_path, "stage2_generate", "export", "--config", str(tiny_config), "--columns", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    out = results / "export"
    np.testing.assert_array_equal(_pixels(out / "grid_natural_p01.png"), _pixels(results / "grid.png"))
    assert (out / "grid_natural_p02.png").is_file() and (out / "grid_natural_p01.pdf").stat().st_size > 1000
    assert (out / "shen_natural_p01.png").is_file() and (out / "shen_natural_p01.pdf").is_file()
    saved, names = read_reconstructions(results / "reconstructions" / "sub-01" / "VC" / "natural" / "wgan_gp.h5")
    with h5py.File(out / "reconstructions.h5", "r") as f:
        np.testing.assert_array_equal(f["wgan_gp/sub-01/VC/natural/images"][()], saved)
        assert [n.decode() for n in f["wgan_gp/sub-01/VC/natural/names"][()]] == names
        assert f["stimuli/natural/images"].shape == saved.shape
    # a chosen subset, at another cell size
    r = _cli(tmp_path, "stage2_generate", "export", "--config", str(tiny_config), "--figure", "grid", "--methods",
             "wgan_gp", "pixel_ridge", "--images", names[2], names[0], "--cell", "0.6", "--out", str(tmp_path / "sub"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["grid_natural_p01.pdf", "grid_natural_p01.png"]
    r = _cli(tmp_path, "stage2_generate", "export", "--config", str(tiny_config), "--figure", "hdf5", "--rois", "all",
             "--out", str(tmp_path / "all"))
    assert r.returncode == 0, r.stderr[-2000:]
    v1, _ = read_reconstructions(results / "reconstructions" / "sub-01" / "V1" / "natural" / "pixel_ridge.h5")
    with h5py.File(tmp_path / "all" / "reconstructions.h5", "r") as f:
        np.testing.assert_array_equal(f["pixel_ridge/sub-01/V1/natural/images"][()], v1)
    bad = _cli(tmp_path, "stage2_generate", "export", "--config", str(tiny_config), "--methods", "vae")
    assert bad.returncode == 2 and "not saved" in bad.stderr and "wgan_gp" in bad.stderr
