"""The simulated experiment: real formats, and the properties that decide difficulty."""

import bdpy
import numpy as np
import torch

from shared import metrics as M
from shared.config import SimulationConfig, load_config
from shared.datasets import load_split
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
    # rerunning with the same settings is a no-op; test files are averaged per image on load
    assert simulate_experiment(cfg) == root
    test = load_split(cfg, "sub-01", "natural", "VC", average=True)
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
