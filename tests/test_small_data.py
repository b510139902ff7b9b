"""Small data unlike the simulator's scenes, on a tiny version of the strokes preset (28 x 28 grey
characters, single trials): a generator that cannot die silently (a dead tick, forced with a huge
learning rate, is detected, rolled back, and stops the run when it keeps dying), and a generator
that runs and is scored at the stimuli's own 28 px."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli
from stage2_generate.watch import Health


def test_health_tells_a_collapsed_output_from_a_starting_one(rng):
    train = rng.uniform(0, 1, (20, 3, 8, 8))
    health = Health(float(train.std(axis=0).mean()))
    mean = np.broadcast_to(train.mean(axis=0), train.shape)
    noise = rng.standard_normal(train.shape)
    assert "not spreading out" in health.dead_reason({"EMA": mean})  # never moved from the mean image
    for scale in (1e-4, 1.03e-4, 1.06e-4, 0.05):  # a slow start, growing 3% a tick, is alive
        assert health.dead_reason({"EMA": mean + scale * noise}) is None
    assert "collapsed" in health.dead_reason({"EMA": mean + 0.001 * noise})  # fell from above 2% to under half
    health = Health(health.reference)
    for scale in (0.001, 0.002):
        assert health.dead_reason({"EMA": mean + scale * noise}) is None
    assert "not spreading out" in health.dead_reason({"EMA": mean + 0.002 * noise})  # stuck under 2%
    assert health.dead_reason({"EMA": train}) is None
    assert "collapsed" in health.dead_reason({"EMA": np.zeros_like(train)})  # black everywhere
    assert "collapsed" in health.dead_reason({"EMA": mean + 0.001 * noise})
    nan = train.copy()
    nan[0, 0, 0, 0] = np.nan
    assert "not finite" in health.dead_reason({"EMA": nan})


@pytest.fixture(scope="module")
def tiny_strokes(tmp_path_factory):
    """Stage 1 of a tiny version of configs/small_strokes.yaml (the shipped config, sizes cut)."""
    folder = tmp_path_factory.mktemp("strokes")
    cfg = yaml.safe_load((ROOT / "configs/small_strokes.yaml").read_text())
    cfg.update(work_dir=str(folder / "work"), results_dir=str(folder / "results"))
    cfg["data"]["root"] = str(folder / "data")
    cfg["simulation"].update(n_train_images=30, n_test_natural=6, voxels_v1=80, voxels_v2=80, voxels_v3=60,
                             voxels_v4=40, voxels_loc=40, voxels_ffa=30, voxels_ppa=30, voxels_other=40)
    cfg["features"].update(layers=["conv3_4", "fc7"], input_size=32)
    cfg["decoder"]["cv_folds"] = 3
    cfg["generator"].update(condition_layers=["conv3_4", "fc7"], consistency_layers=[], base_channels=8,
                            iterations=4, tick_every=2, lr=1000.0)  # a learning rate that kills the first tick
    path = folder / "strokes.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_cli("stage1_decode", "run", "--config", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    return path, folder / "results" / cfg["experiment"]


def _events(results):
    return [json.loads(line) for line in (results / "stats.jsonl").read_text().splitlines()]


def test_a_dead_tick_rolls_back_and_recovers(tiny_strokes):
    config, results = tiny_strokes
    r = run_cli("stage2_generate", "run", "--config", str(config), "--set", "generator.rollback_lr_factor=1e-6")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dead output at step 2" in r.stderr and "rolling back" in r.stderr
    events = _events(results)
    rollbacks = [e for e in events if e.get("event") == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["step"] == 2 and rollbacks[0]["lr"] == pytest.approx(1e-3)
    ticks = [e for e in events if "event" not in e]
    assert [t["step"] for t in ticks] == [2, 4] and all(t["lr"] == pytest.approx(1e-3) for t in ticks)
    metrics = json.loads((results / "metrics.json").read_text())
    assert len(metrics["reconstruction_info"]["generator"]["rollbacks"]) == 1
    summary = (results / "summary.md").read_text()
    assert "1 rollback(s) of a dead output" in summary and "- step 2: " in summary


def test_a_generator_that_keeps_dying_stops_with_one_line(tiny_strokes):
    config, results = tiny_strokes
    other = results.parent.parent / "results_dies"  # another generator (seed) and results folder, the same store
    r = run_cli("stage2_generate", "run", "--config", str(config), "--set", f"results_dir={other}",
                "--set", "generator.seed=1", "--set", "generator.max_rollbacks=1")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the generator's output died at step 2") and "lower generator.lr" in last
    events = _events(other / results.name / "runs" / "stage2-001")
    assert [e["step"] for e in events if e.get("event") == "rollback"] == [2]


def _add_method(monkeypatch, name, reconstruct):
    """Stage 2 runs one more method, ``name``, drawing ``reconstruct(test)`` for the test sets."""
    from stage2_generate import methods as registry

    selected = registry.selected

    class Extra(registry.Method):
        validated = False

        def reconstruct(self, test):
            return reconstruct(test)

    Extra.name = name
    monkeypatch.setattr(registry, "selected",
                        lambda run, baselines, blend=False: [*selected(run, baselines, blend), Extra])


def test_a_28px_set_is_generated_and_scored_at_28px(tiny_strokes, tmp_path, monkeypatch):
    """A method returning the stimuli themselves scores PixCorr 1 and SSIM 1: nothing is resampled."""
    from shared import checkpoints
    from shared.config import load_config
    from shared.datasets import DataSource, split_images
    from stage2_generate.pipeline import run

    config, _ = tiny_strokes
    cfg = load_config(config, [f"results_dir={tmp_path}", "generator.lr=0.001"])
    assert cfg.generator.image_size == 28 and cfg.eval.score_size == 0
    _add_method(monkeypatch, "stimuli", lambda test: split_images(DataSource.of(cfg), test.split, test.names, 28))
    run(cfg)
    metrics = json.loads((tmp_path / cfg.experiment / "metrics.json").read_text())
    assert metrics["reconstruction_info"]["score_size"] == {"pixels": 28, "native": 28,
                                                           "label": "the stimuli's own size"}
    row = metrics["reconstruction"]["sub-01"]["stimuli"]
    assert row["pixcorr"] == pytest.approx(1, abs=1e-6) and row["ssim"] == pytest.approx(1, abs=1e-6)
    assert metrics["reconstruction"]["sub-01"]["wgan_gp"]["pixcorr"] < 0.99
    finals = list((cfg.work_path / "generator").glob("*/generator.pt"))
    assert finals and all(tuple(checkpoints.load(p)["generator"]["mean_image"].shape) == (1, 28, 28)
                          for p in finals)  # every generator of this set is a grey 28-px one


def test_a_generator_larger_than_the_stimuli_is_scored_at_their_size(tiny_strokes, tmp_path, monkeypatch):
    from shared.config import load_config
    from shared.datasets import DataSource, split_images
    from stage2_generate.pipeline import run

    config, _ = tiny_strokes
    cfg = load_config(config, [f"results_dir={tmp_path}", "generator.lr=0.001", "generator.image_size=32"])
    _add_method(monkeypatch, "stimuli", lambda test: split_images(DataSource.of(cfg), test.split, test.names, 32))
    run(cfg)
    metrics = json.loads((tmp_path / cfg.experiment / "metrics.json").read_text())
    assert metrics["reconstruction_info"]["score_size"]["pixels"] == 28
    row = metrics["reconstruction"]["sub-01"]["stimuli"]
    assert 0.9 < row["pixcorr"] < 0.999  # upsampled to 32 px and back to 28: resampling costs a little


def test_a_method_drawing_non_finite_pixels_stops_the_run_in_one_line(tiny_strokes, tmp_path, monkeypatch):
    from shared.config import load_config
    from shared.errors import UserError
    from stage2_generate.pipeline import run

    config, _ = tiny_strokes
    cfg = load_config(config, [f"results_dir={tmp_path}", "generator.lr=0.001"])
    _add_method(monkeypatch, "diverged", lambda test: np.full((len(test.names), 3, 28, 28), np.nan, np.float32))
    with pytest.raises(UserError, match=r"^diverged reconstructed sub-01 \S+ \S+ images with non-finite pixels"):
        run(cfg)
    assert not (tmp_path / cfg.experiment / "metrics.json").exists() or "diverged" not in \
        (tmp_path / cfg.experiment / "metrics.json").read_text()
