"""The image coders' guard (latent_regression's autoencoder, the VAE): a tick whose loss diverges or whose
autoencodings collapse rolls back to the last healthy checkpoint with a cut learning rate; spent rollbacks stop
the run with a one-line error; a coder still on the mean image is left to train."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import write_tiny_config


def _cfg(tmp_path, *sets):
    from shared.config import load_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_config(write_tiny_config(tmp_path, tmp_path / "data"), list(sets))


def _images(n=20, seed=0):
    rng = np.random.default_rng(seed)
    code = rng.normal(size=(n, 3))
    return np.clip(0.5 + 0.15 * (code[:, :, None, None] + 0.3 * rng.normal(size=(n, 3, 32, 32))), 0, 1
                   ).astype(np.float32)


def test_a_tick_is_dead_when_its_loss_is_not_finite_diverges_or_its_outputs_collapse():
    from stage2_generate.watch import DEAD_SPREAD, Health, coder_dead_reason, image_spread

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(10, 3, 8, 8))
    health = Health(image_spread(images), patient=True)
    flat = np.full_like(images, 0.5) + 1e-6 * rng.normal(size=images.shape)
    assert coder_dead_reason(float("nan"), 1.0, health, {"x": images}) == "the training loss is not finite"
    assert "diverged" in coder_dead_reason(10.5, 1.0, health, {"x": images})
    # patient: near the mean image before it ever spread out is alive (however long), even shrinking
    assert coder_dead_reason(1.0, 1.0, health, {"x": flat}) is None
    assert coder_dead_reason(1.0, 1.0, health, {"x": 0.5 + 0.1 * (flat - 0.5)}) is None
    assert coder_dead_reason(9.5, 1.0, health, {"x": images}) is None  # spread out: remembered
    assert image_spread(images) >= DEAD_SPREAD * health.reference
    assert "collapsed" in coder_dead_reason(1.0, 1.0, health, {"x": flat})  # and fallen back
    # the generator's Health (not patient) calls an output that stays flat dead
    strict = Health(image_spread(images))
    assert strict.dead_reason({"x": flat}) is None and "not spreading out" in strict.dead_reason({"x": flat})


def test_a_dead_tick_rolls_back_with_a_cut_learning_rate_and_the_record_says_so(tmp_path, caplog, monkeypatch):
    import stage2_generate.methods._image_coder as coders

    real, calls = coders.coder_dead_reason, []

    def dead_once(loss, lowest, health, outputs):  # the second tick (step 4) dead, once
        calls.append(loss)
        return "a test's dead tick" if len(calls) == 2 else real(loss, lowest, health, outputs)

    monkeypatch.setattr(coders, "coder_dead_reason", dead_once)
    cfg = _cfg(tmp_path, "methods.coder_iterations=8")
    with caplog.at_level(logging.INFO):
        coder = coders.train_coder(cfg, "autoencoder", _images(), 3, "cpu")
    assert "rolling back autoencoder training at step 2" in caplog.text
    assert len(calls) == 5  # ticks at 2, 4 (dead), 4 again, 6, 8
    (event,) = coder.tick["rollbacks"]
    assert event["step"] == 4 and event["cause"] == "a test's dead tick"
    assert event["lr"] == pytest.approx(cfg.methods.coder_lr * cfg.generator.rollback_lr_factor)


def test_spent_rollbacks_stop_the_training_with_what_to_change(tmp_path, monkeypatch):
    import stage2_generate.methods._image_coder as coders
    from shared.errors import UserError

    monkeypatch.setattr(coders, "coder_dead_reason", lambda *a: "a test's dead tick")
    cfg = _cfg(tmp_path, "methods.coder_iterations=8", "generator.max_rollbacks=2")
    with pytest.raises(UserError, match=r"vae coder's output died at step 2 \(a test's dead tick\) after 2 "
                                        r"rollback\(s\).*lower methods.coder_lr"):
        coders.train_coder(cfg, "vae", _images(), 3, "cpu")


def test_a_learning_rate_that_blows_the_coder_up_is_caught_not_kept(tmp_path):
    """No stand-in: a learning rate far too high makes the VAE's loss explode on its first tick; every rollback
    cuts it, and the error names the divergence (where the unguarded coder trained on to a loss of 1e36)."""
    from shared.errors import UserError
    from stage2_generate.methods._image_coder import train_coder

    cfg = _cfg(tmp_path, "methods.coder_iterations=8", "methods.coder_lr=100")
    with pytest.raises(UserError, match="the training loss (diverged|is not finite)"):
        train_coder(cfg, "vae", _images(), 3, "cpu")


def test_a_coder_trained_at_its_default_rate_is_left_alone(tmp_path):
    from stage2_generate.methods._image_coder import train_coder

    coder = train_coder(_cfg(tmp_path, "methods.coder_iterations=20"), "vae", _images(), 3, "cpu")
    assert coder.tick["rollbacks"] == []
