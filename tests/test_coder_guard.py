"""The image coders' guard (latent_regression's autoencoder, the VAE): a tick whose loss diverges or whose
autoencodings collapse rolls back to the last healthy checkpoint with a cut learning rate; spent rollbacks stop
the run with a one-line error; a coder still on the mean image is left to train."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import write_tiny_config
from shared import checkpoints


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
    assert "collapsed" in coder_dead_reason(1.0, 1.0, health, {"x": flat})  # and fallen back
    # just past the dead line and back under it, but not below half of its best: alive (still leaving the mean)
    edge = Health(1.0, patient=True)
    near = 0.5 + rng.normal(size=(50, 1, 4, 4))
    near = 0.5 + (near - 0.5) * (1.05 * DEAD_SPREAD / image_spread(near))
    assert edge.dead_reason({"x": near}) is None
    assert edge.dead_reason({"x": 0.5 + (near - 0.5) * 0.9}) is None
    assert "collapsed" in edge.dead_reason({"x": 0.5 + (near - 0.5) * 0.4})
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
    cut = cfg.methods.coder_lr * cfg.generator.rollback_lr_factor
    assert event["lr"] == pytest.approx(cut)
    # the rate the optimiser went on with, as the last checkpoint holds it
    state, _ = checkpoints.load_latest(coders.coder_folder(cfg, "autoencoder", 3, _images())[0] / "checkpoint.pt")
    assert [g["lr"] for g in state["opt"]["param_groups"]] == [pytest.approx(cut)]
    assert state["guard"]["lr_scale"] == pytest.approx(cfg.generator.rollback_lr_factor)


def test_a_training_stopped_after_a_rollback_resumes_with_its_cut_rate_and_record(tmp_path, monkeypatch):
    """Stopped at step 6 after a rollback at step 4, resumed to 8: the same coder as one training straight to 8
    with the same rollback (the cut rate, the record and the guard's memory come back with the checkpoint)."""
    import stage2_generate.methods._image_coder as coders
    from stage2_generate.methods._coder_nets import encode_means

    def dead_at_first_step_4(calls):
        real = coders.coder_dead_reason

        def reason(loss, lowest, health, outputs):
            calls.append(loss)
            return "a test's dead tick" if len(calls) == 2 else real(loss, lowest, health, outputs)
        return reason

    images = _images()
    monkeypatch.setattr(coders, "coder_dead_reason", dead_at_first_step_4([]))
    straight = coders.train_coder(_cfg(tmp_path / "a", "methods.coder_iterations=8"), "vae", images, 3, "cpu")
    monkeypatch.setattr(coders, "coder_dead_reason", dead_at_first_step_4([]))
    coders.train_coder(_cfg(tmp_path / "b", "methods.coder_iterations=6"), "vae", images, 3, "cpu")
    monkeypatch.setattr(coders, "coder_dead_reason", _real_reason())  # the resumed part: no stand-in
    resumed = coders.train_coder(_cfg(tmp_path / "b", "methods.coder_iterations=8"), "vae", images, 3, "cpu")
    assert resumed.tick["rollbacks"] == straight.tick["rollbacks"] and len(straight.tick["rollbacks"]) == 1
    np.testing.assert_allclose(encode_means(resumed, images, "cpu"), encode_means(straight, images, "cpu"), atol=1e-5)


def _real_reason():
    from stage2_generate.watch import coder_dead_reason

    return coder_dead_reason


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
    """An autoencoder that spreads out (about half the training images' spread in 60 tiny steps), so the collapse
    rule watches it as well as the divergence rule."""
    from stage2_generate.methods._coder_nets import raw_autoencode
    from stage2_generate.methods._image_coder import train_coder
    from stage2_generate.watch import DEAD_SPREAD, image_spread

    images = _images()
    coder = train_coder(_cfg(tmp_path, "methods.coder_iterations=60"), "autoencoder", images, 3, "cpu")
    assert coder.tick["rollbacks"] == []
    assert image_spread(raw_autoencode(coder, images, "cpu")) > 5 * DEAD_SPREAD * image_spread(images)
    assert "dead" not in coder.tick


def test_a_coder_that_never_left_the_mean_image_is_marked_not_passed_for_trained(tmp_path):
    """Patient, the guard rolls nothing back; but a run whose coder still draws the mean image at its end does not
    end as if it had trained: the tick record, the method's row and summary.md's lines say so."""
    from shared.report import _method_ticks
    from stage2_generate.methods._image_coder import train_coder

    coder = train_coder(_cfg(tmp_path, "methods.coder_iterations=8"), "vae", _images(), 3, "cpu")
    assert coder.tick["rollbacks"] == [] and "never left the mean image in 8 steps" in coder.tick["dead"]
    lines = _method_ticks({"sub-01": {"vae": {"pixcorr": 0.0, "coder": {"dead": coder.tick["dead"]}},
                                      "wgan_gp": {"pixcorr": 0.5}}})
    assert any("`vae` (sub-01): its image coder did not train" in ln for ln in lines)
    assert not any("wgan_gp" in ln for ln in lines)
