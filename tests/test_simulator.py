"""The simulated experiment: real formats, and the properties that decide difficulty."""

import hashlib

import bdpy
import numpy as np
import torch

from shared import metrics as M
from shared.config import SimulationConfig, load_config
from shared.datasets import DataSource, load_split
from shared.simulate import brain as B
from shared.simulate.experiment import simulate_experiment
from shared.simulate.stimuli import natural_scene


def test_stimuli_are_deterministic():
    a = natural_scene(np.random.default_rng([1, 2]), 32)
    b = natural_scene(np.random.default_rng([1, 2]), 32)
    assert a.shape == (3, 32, 32) and np.array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 1


def test_bdata_files_open_with_bdpy_and_select_vc(tiny_config):
    cfg = load_config(tiny_config)
    root = simulate_experiment(cfg)
    path = root / "sub-01_perceptionNaturalImageTraining_original_VC.h5"
    bd = bdpy.BData(str(path))
    sim = cfg.simulation
    n_vc = sum(getattr(sim, f"voxels_{r}") for r in ("v1", "v2", "v3", "v4", "loc", "ffa", "ppa", "other"))
    assert bd.select("ROI_VC = 1", verbose=False).shape == (sim.n_train_images * sim.n_train_reps, n_vc)
    assert bd.select("ROI_V1 = 1", verbose=False).shape[1] == sim.voxels_v1
    lvc = bd.select("ROI_LVC = 1", verbose=False).shape[1]
    assert lvc == sim.voxels_v1 + sim.voxels_v2 + sim.voxels_v3
    index = bd.select("image_index", verbose=False).ravel()
    assert sorted(np.unique(index)) == list(range(1, sim.n_train_images + 1))
    assert np.bincount(index.astype(int))[1:].tolist() == [sim.n_train_reps] * sim.n_train_images
    # the trial order of today's natural experiments is pinned (computed before the presets were added)
    order_hash = hashlib.sha256(index.astype(np.int64).tobytes()).hexdigest()
    assert order_hash == "6546790c19f708cc0e50ee7b4db06bfc3ada9d87d60299deb0a4c7e633786c71"
    # rerunning with the same settings is a no-op; test files are averaged per image on load
    assert simulate_experiment(cfg) == root
    test = load_split(DataSource.of(cfg), "sub-01", "natural", "VC", average=True)
    assert test.X.shape == (sim.n_test_natural, n_vc)
    assert list(test.names) == [f"sim_test_{i:03d}" for i in range(1, sim.n_test_natural + 1)]


def test_changed_settings_are_refused(tiny_config):
    import pytest

    from shared.errors import UserError

    simulate_experiment(load_config(tiny_config))
    with pytest.raises(UserError, match="simulation.seed differs"):
        simulate_experiment(load_config(tiny_config, ["simulation.seed=5"]))


def _small_brain(**kw):
    cfg = SimulationConfig(voxels_v1=300, voxels_v2=200, voxels_v3=200, voxels_v4=100, voxels_loc=100,
                           voxels_ffa=60, voxels_ppa=60, voxels_other=80, **kw)
    rng = np.random.default_rng(0)
    imgs = np.stack([natural_scene(rng, 32) for _ in range(150)])
    brain = B.make_brain(cfg, rng)
    maps = B.channel_maps(imgs)
    B.calibrate(brain, cfg, maps)
    return cfg, brain, maps, rng


def test_contrast_dominates_luminance_and_colour():
    cfg, brain, maps, _ = _small_brain()
    contrast, linear, _ = B._drives(brain, maps)
    ratio = (linear.var(0) / contrast.var(0)).median().item()
    assert abs(ratio - (cfg.luminance_share + cfg.colour_share)) < 0.02


def test_uniform_field_drives_retinotopic_voxels_weakly():
    cfg, brain, maps, _ = _small_brain()
    grey = torch.zeros(1, B.N_CHANNELS, B.MAP_SIZE, B.MAP_SIZE)
    bright = grey.clone()
    bright[:, B.CH_LUM] = 0.3  # a uniform brighter field: no contrast, only luminance
    _, lin_bright, _ = B._drives(brain, bright)
    _, lin_scenes, _ = B._drives(brain, maps)
    # the suppressive surround cancels most of a uniform field's drive
    assert lin_bright.abs().median() < 0.5 * lin_scenes.std(0).median()


def test_default_noise_gives_realistic_single_trial_reliability():
    cfg, brain, maps, rng = _small_brain()
    trials = B.trial_responses(brain, cfg, torch.cat([maps, maps]), rng)
    names = np.tile(np.arange(len(maps)).astype(str), 2)
    rel = np.median(M.single_trial_reliability(trials, names))
    assert 0.05 <= rel <= 0.30


def test_noise_is_shared_and_spatially_correlated():
    cfg, brain, maps, rng = _small_brain()
    one = maps[:1].repeat(400, 1, 1, 1)  # the same image 400 times: variability is noise only
    trials = B.trial_responses(brain, cfg, one, rng)
    c = np.corrcoef(trials.T)
    eig = np.linalg.eigvalsh(c)[::-1]
    # independent noise: the top 5 of ~1100 components would explain about 3% of the variance
    assert eig[:5].sum() / eig.sum() > 0.15  # shared components (global factors, trial gain)
    pos = brain.position
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    near, far = c[(d > 0) & (d < 3)].mean(), c[d > 30].mean()
    assert near > far + 0.05  # neighbours share more noise than distant voxels


# ------------------------------------------------------------- presets like small public sets

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from shared.errors import UserError  # noqa: E402
from shared.simulate.experiment import _stimulus_sets  # noqa: E402
from shared.simulate.stimuli import PRESETS, SHAPE_GRID  # noqa: E402

SMALL_VOXELS = {"voxels_v1": 40, "voxels_v2": 30, "voxels_v3": 30, "voxels_v4": 20, "voxels_loc": 20,
                "voxels_ffa": 10, "voxels_ppa": 10, "voxels_other": 20}


def _preset_images(kind: str, seed: int = 0, n: int = 24, size: int = 28) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([PRESETS[kind](rng, size) for _ in range(n)])


def _u8(img: np.ndarray) -> np.ndarray:
    return np.round(img * 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["strokes", "shapes"])
def test_presets_are_grey_images_of_the_right_size(kind):
    imgs = _preset_images(kind)
    assert imgs.shape == (24, 3, 28, 28) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 1
    assert np.array_equal(imgs[:, 0], imgs[:, 1]) and np.array_equal(imgs[:, 0], imgs[:, 2])


def test_strokes_are_sparse_white_strokes_on_black():
    imgs = _preset_images("strokes")[:, 0]
    assert imgs.mean() < 0.25  # mostly black
    assert all(im.max() > 0.95 for im in imgs)  # every character has fully white stroke pixels
    assert all(np.median(im) == 0 for im in imgs)  # on a black background
    assert all((im > 0.5).mean() > 0.03 for im in imgs)  # and a visible character
    edges = np.concatenate([imgs[:, 0], imgs[:, -1], imgs[:, :, 0], imgs[:, :, -1]], axis=1)
    assert edges.mean() < 0.05  # characters stay inside the frame
    assert len({im.tobytes() for im in imgs}) == len(imgs)  # jitter makes every draw its own image


def test_shapes_are_binary_figures_on_a_coarse_grid():
    size = 2 * SHAPE_GRID
    imgs = _preset_images("shapes", size=size)[:, 0]
    assert set(np.unique(imgs)) == {0.0, 1.0}
    assert all(0 < im.mean() < 0.7 for im in imgs)  # a white figure on black, never empty
    blocks = imgs.reshape(len(imgs), SHAPE_GRID, 2, SHAPE_GRID, 2)
    assert np.array_equal(blocks.min(axis=(2, 4)), blocks.max(axis=(2, 4)))  # each grid cell one value


@pytest.mark.parametrize("kind", ["strokes", "shapes"])
def test_presets_are_deterministic(kind):
    assert np.array_equal(_preset_images(kind, seed=3), _preset_images(kind, seed=3))
    assert not np.array_equal(_preset_images(kind, seed=3), _preset_images(kind, seed=4))


def test_natural_path_is_unchanged():
    # hashes computed with the simulator before the presets were added
    cfg = load_config(None, ["simulation.image_size=32", "simulation.n_train_images=3", "simulation.n_test_natural=2"])
    sets = _stimulus_sets(cfg)
    assert [n for n, _ in sets["train"]] == ["sim_train_0001", "sim_train_0002", "sim_train_0003"]
    assert [n for n, _ in sets["natural"]] == ["sim_test_001", "sim_test_002"]
    first = hashlib.sha256(_u8(sets["train"][0][1]).tobytes()).hexdigest()
    assert first == "119c4317a55be375f10b909edc475a2b3f579975112c94070b4bae42ba01c68c"
    every = hashlib.sha256(b"".join(_u8(img).tobytes() for s in ("train", "natural") for _, img in sets[s]))
    assert every.hexdigest() == "22cb4b56f8f322405ac46f34ddccd49c0a4ed4e5e23f99a5c8b6c193fb34defa"


def test_preset_test_images_differ_from_training_images():
    cfg = load_config(None, ["simulation.stimuli=shapes", "simulation.image_size=10", "simulation.n_train_images=150",
                             "simulation.n_test_natural=40"])
    sets = _stimulus_sets(cfg)
    train = {_u8(img).tobytes() for _, img in sets["train"]}
    test = {_u8(img).tobytes() for _, img in sets["natural"]}
    assert len(train) == 150 and len(test) == 40 and not train & test


def _preset_config(tmp_path, *overrides: str):
    sim = [f"simulation.{k}={v}" for k, v in SMALL_VOXELS.items()]
    return load_config(None, [f"data.root={tmp_path / 'data'}", "simulation.image_size=20", *sim, *overrides])


def test_n_train_trials_shows_every_image_and_repeats_some(tmp_path):
    cfg = _preset_config(tmp_path, "simulation.stimuli=strokes", "simulation.n_train_images=12",
                         "simulation.n_train_trials=40",
                         "simulation.n_test_natural=3", "simulation.n_test_natural_reps=1")
    root = simulate_experiment(cfg)
    bd = bdpy.BData(str(root / "sub-01_perceptionNaturalImageTraining_original_VC.h5"))
    counts = np.bincount(bd.select("image_index", verbose=False).ravel().astype(int))[1:]
    assert len(counts) == 12 and counts.sum() == 40
    assert counts.min() >= 1 and counts.max() > 1 and len(set(counts)) > 1  # unequal repeats
    assert bd.select("ROI_VC = 1", verbose=False).shape == (40, sum(SMALL_VOXELS.values()))
    png = np.asarray(Image.open(root / "images/training/sim_train_0001.png"))
    assert png.shape == (20, 20, 3) and (png[..., 0] == png[..., 2]).all() and png.mean() < 80
    with pytest.raises(UserError, match="simulation.n_train_trials"):
        _preset_config(tmp_path, "simulation.n_train_images=12", "simulation.n_train_trials=11")


def test_matrix_format_writes_column_major_mat_files(tmp_path):
    from scipy.io import loadmat

    cfg = _preset_config(tmp_path, "simulation.stimuli=shapes", "simulation.format=matrix", "data.rois=[all]",
                         "data.matrix.file={subject}_shapes.mat", "simulation.n_train_images=8",
                         "simulation.n_train_trials=20",
                         "simulation.n_test_natural=4", "simulation.n_test_natural_reps=2")
    assert list(cfg.data.test) == ["test"]
    root = simulate_experiment(cfg)
    assert sorted(p.name for p in root.iterdir()) == ["simulation.json", "sub-01_shapes.mat"]
    mat = loadmat(root / "sub-01_shapes.mat")
    n_vox = sum(SMALL_VOXELS.values())
    assert mat["X_train"].shape == (20, n_vox) and mat["X_test"].shape == (8, n_vox)
    assert mat["Y_train"].shape == (20, 400) and mat["Y_test"].shape == (8, 400)
    assert mat["Y_train"].dtype == np.uint8 and set(np.unique(mat["Y_train"])) == {0, 255}
    sets = _stimulus_sets(cfg)
    for split, key in (("train", "Y_train"), ("test", "Y_test")):
        images = [_u8(img[0]) for _, img in sets[split]]
        rows = [row.reshape(20, 20, order="F") for row in mat[key]]  # MATLAB's column-major flattening
        which = [[k for k, img in enumerate(images) if np.array_equal(row, img)] for row in rows]
        assert all(len(w) == 1 for w in which)  # every row is exactly one of the split's images
        assert sorted({w[0] for w in which}) == list(range(len(images)))  # every image is shown
    assert any(not np.array_equal(row.reshape(20, 20, order="C"), row.reshape(20, 20, order="F"))
               for row in mat["Y_train"])  # the orders differ on these images, so the check above can fail
    assert len({r.tobytes() for r in mat["Y_test"]}) == 4  # 4 test images, each shown twice
    assert simulate_experiment(cfg) == root  # the marker makes a rerun a no-op
