"""The validation hold-out: seeded and image-grouped, never trained on, and the tick it picks reconstructs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.holdout import validation_split


def test_validation_split_is_seeded_grouped_and_disjoint():
    names = [f"img{i:02d}" for i in range(50)]
    fit, val = validation_split(names, 0.1, seed=0)
    assert len(val) == 5 and len(fit) == 45
    assert not set(fit) & set(val) and set(fit) | set(val) == set(names)
    assert fit == [n for n in names if n in set(fit)]  # the names' own order on both sides
    assert validation_split(names, 0.1, 0) == (fit, val)
    assert validation_split(names, 0.1, 1)[1] != val
    # trials of repeated images: each image once, all of its repeats on one side
    assert validation_split([n for n in names for _ in range(3)], 0.1, 0) == (fit, val)
    assert validation_split(names, 0.0, 0) == (names, [])
    assert len(validation_split(names[:3], 0.1, 0)[1]) == 1  # at least one image when asked for a hold-out


def _ticks(path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "event" not in r]


def test_reconstruction_uses_the_validation_best_tick(tiny_finished):
    ticks = _ticks(tiny_finished.results / "stats.jsonl")
    assert [t["step"] for t in ticks] == [2, 4] and all("val_pixcorr" in t and "val_alexnet5" in t for t in ticks)
    # 6 held-out images, under watch.MIN_HOLDOUT: no tick can win beyond noise, the last one reconstructs
    best = ticks[-1]
    info = tiny_finished.metrics["reconstruction_info"]
    assert info["generator"]["best_step"] == best["step"] == 4
    assert info["generator"]["holdout_too_small"] and info["generator"]["holdout_images"] == 6
    assert info["validation"]["n_images"] == 6 and info["validation"]["n_train_images"] == 54
    assert info["generator"]["threads"] == [1]  # the CPU threads it trained under (the tests' OMP_NUM_THREADS)
    # the generator that reconstructs scores on the held-out images what the best tick scored
    got = tiny_finished.metrics["reconstruction_validation"]["sub-01"]["wgan_gp"]
    assert abs(got["pixcorr"] - best["val_pixcorr"]) < 1e-4 and abs(got["ssim"] - best["val_ssim"]) < 1e-4
    assert {"pixel_ridge", "nearest_train"} <= set(tiny_finished.metrics["reconstruction_validation"]["sub-01"])
    summary = (tiny_finished.results / "summary.md").read_text()
    assert f"step {best['step']} of 4 reconstructs" in summary and "No tick had a dead output" in summary
    assert "too small to choose a tick within noise" in summary
    assert "- `pixel_ridge`: ridge from voxels to pixels" in summary and "- `wgan_gp`: the WGAN-GP" in summary
    assert (tiny_finished.results / "training.png").is_file()


def test_no_validation_image_is_trained_on(tiny_finished, tmp_path, monkeypatch):
    """Run stage 2 in this process with spies on what the generator and the baselines are given."""
    import stage2_generate.methods._voxel_ridge as voxel_ridge
    import stage2_generate.train as train
    from shared.config import load_config
    from shared.datasets import DataSource, split_image_names, split_images
    from stage2_generate.pipeline import run

    seen = {}
    real_train, real_ridge = train.train_generator, voxel_ridge.VoxelRidge

    def spy_train(gc, features, sampler, transforms, images, *args, **kwargs):
        seen.update(images=images, n_true=len(sampler.true[0]), n_oof=sampler.oof[0].shape[1])
        return real_train(gc, features, sampler, transforms, images, *args, **kwargs)

    def spy_ridge(decoder, seed, trials, names, device):
        seen.update(ridge_trials=set(trials.names), ridge_images=list(names))
        return real_ridge(decoder, seed, trials, names, device)

    monkeypatch.setattr(train, "train_generator", spy_train)
    monkeypatch.setattr(voxel_ridge, "VoxelRidge", spy_ridge)
    cfg = load_config(tiny_finished.config, [f"results_dir={tmp_path}"])
    run(cfg)
    names = split_image_names(DataSource.of(cfg), "train")
    fit, val = validation_split(names, cfg.eval.validation_fraction, cfg.seed)
    val_images = split_images(DataSource.of(cfg), "train", val, cfg.generator.image_size)
    trained = seen["images"]
    assert len(trained) == len(fit) == seen["n_true"] == seen["n_oof"] == len(names) - len(val)
    # every batch is drawn from these rows: none of them is a held-out image
    diff = np.abs(trained[:, None] - val_images[None]).reshape(len(trained), len(val), -1).max(axis=2)
    assert diff.min() > 1e-3
    assert not seen["ridge_trials"] & set(val) and seen["ridge_images"] == fit


def _stage2(tiny_finished, tmp_path, *overrides):
    """Stage 2 of the tiny experiment in this process, results under ``tmp_path``; its metrics and stats."""
    from shared.config import load_config
    from stage2_generate.pipeline import run

    cfg = load_config(tiny_finished.config, [f"results_dir={tmp_path}", *overrides])
    run(cfg)
    results = tmp_path / cfg.experiment
    stats = [json.loads(line) for line in (results / "stats.jsonl").read_text().splitlines()]
    return cfg, json.loads((results / "metrics.json").read_text()), stats, results


def test_an_earlier_best_tick_is_the_one_that_reconstructs(tiny_finished, tmp_path, monkeypatch):
    import stage2_generate.watch as watch

    real, calls = watch.Validation.__call__, []

    def first_tick_best(self, generate):
        scores, recon = real(self, generate)
        calls.append(dict(scores))
        first = len(calls) == 1  # the first tick scores best, beyond noise, by rigging
        scores[self.key] = 1.0 if first else 0.0
        n = len(scores[watch.HELD_VALUES])
        scores[watch.HELD_VALUES] = [1.0 + 0.01 * i if first else 0.0 for i in range(n)]
        return scores, recon

    monkeypatch.setattr(watch, "MIN_HOLDOUT", 2)  # the tiny hold-out has 6 images
    monkeypatch.setattr(watch.Validation, "__call__", first_tick_best)
    _, metrics, _, _ = _stage2(tiny_finished, tmp_path, "generator.seed=7", "generator.lr=0.003")
    assert len(calls) == 2 and metrics["reconstruction_info"]["generator"]["best_step"] == 2
    assert abs(calls[0]["val_pixcorr"] - calls[1]["val_pixcorr"]) > 1e-3  # the two ticks differ
    got = metrics["reconstruction_validation"]["sub-01"]["wgan_gp"]["pixcorr"]  # scored after training, by the kept generator
    assert abs(got - calls[0]["val_pixcorr"]) < 1e-4


def test_a_dead_tick_after_a_healthy_one_rolls_back_to_it(tiny_finished, tmp_path, monkeypatch, caplog):
    import logging

    import stage2_generate.watch as watch

    real, calls = watch.Health.dead_reason, []

    def dies_once(self, outputs):
        calls.append(1)
        return "forced dead" if len(calls) == 2 else real(self, outputs)

    monkeypatch.setattr(watch.Health, "dead_reason", dies_once)
    caplog.set_level(logging.INFO)
    cfg, metrics, stats, results = _stage2(tiny_finished, tmp_path, "generator.seed=8", "generator.iterations=6")
    lr = cfg.generator.lr
    assert [(s["step"], s["lr"]) for s in stats if s.get("event") == "rollback"] == [(4, lr * 0.3)]
    assert [(s["step"], s["lr"]) for s in stats if "event" not in s] == [(2, lr), (4, lr * 0.3), (6, lr * 0.3)]
    assert "rolling back generator training at step 2 from" in caplog.text
    assert [r["step"] for r in metrics["reconstruction_info"]["generator"]["rollbacks"]] == [4]
    assert "- step 4: forced dead; learning rate now" in (results / "summary.md").read_text()


def test_a_rerun_without_a_hold_out_leaves_no_earlier_validation_table(tiny_finished, tmp_path):
    from shared.config import load_config
    from shared.errors import UserError
    from stage1_decode.pipeline import run as stage1

    _stage2(tiny_finished, tmp_path)
    results = tmp_path / "tiny"
    assert (results / "validation.md").is_file()
    # the hold-out is stage 1's too (its decoders never see it): stage 2 alone cannot drop it
    with pytest.raises(UserError, match=r"stage 1 held out .*eval.validation_fraction=0"):
        _stage2(tiny_finished, tmp_path, "eval.validation_fraction=0")
    work = [f"work_dir={tmp_path / 'work'}", "eval.validation_fraction=0"]
    stage1(load_config(tiny_finished.config, [f"results_dir={tmp_path}", *work]))
    _, metrics, _, _ = _stage2(tiny_finished, tmp_path, *work)
    assert metrics["reconstruction_validation"] == {}
    assert not (results / "validation.md").exists() and not (results / "validation.csv").exists()
    summary = (results / "summary.md").read_text()
    assert "No validation hold-out" in summary and "held-out training images" not in summary.split("## Training")[1]
    # stage 1 without a hold-out removes the hold-out it decoded before, and its decoders, fit on every training
    # image, are refused to a stage 2 that holds some out (the held-out images were in their fit)
    assert not list((tmp_path / "work").rglob("validation.h5"))
    assert list((tmp_path / "work").rglob("train_oof.h5"))
    with pytest.raises(UserError, match=r"hold \d+ image\(s\) this run holds out .* stage 1 held out other"):
        _stage2(tiny_finished, tmp_path, f"work_dir={tmp_path / 'work'}")
