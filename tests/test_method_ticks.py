"""Every trained method reconstructs from the tick the validation hold-out chooses (``watch.TickChooser``):
``end_to_end``'s generator, the image coders and ``latent_regression``'s tuned map, each with a hold-out
scorer rigged to prefer its first tick beyond noise; without a hold-out, the last tick."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_tiny_config

from stage2_generate.watch import MIN_HOLDOUT

N_HELD = MIN_HOLDOUT + 2


def _cfg(tmp_path, *sets):
    from shared.config import load_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_config(write_tiny_config(tmp_path, tmp_path / "data"),
                       ["generator.iterations=4", "generator.tick_every=2", "generator.loss_perceptual=0",
                        "methods.coder_iterations=4", "methods.coder_latent=4", *sets])


def _data(rng, n_images=16, reps=2, n_voxels=24):
    """Training trials, their images ``(n, 3, 32, 32)`` and a hold-out of ``N_HELD`` images (voxels, images)."""
    from shared.datasets import SplitData

    code = rng.normal(size=(n_images + N_HELD, 4))
    mix = rng.normal(size=(4, n_voxels))
    names = np.array([f"im{i:02d}" for i in range(n_images)] * reps)
    img = np.tile(np.arange(n_images), reps)
    X = (code[img] @ mix + 0.5 * rng.normal(size=(len(img), n_voxels)) + 3.0).astype(np.float32)
    images = np.clip(0.5 + 0.15 * (code[:, :3, None, None] + 0.3 * rng.normal(size=(len(code), 3, 32, 32))),
                     0, 1).astype(np.float32)
    held_voxels = (code[n_images:] @ mix + 3.0).astype(np.float32)
    return (SplitData(X, names, "VC", None), [f"im{i:02d}" for i in range(n_images)], images[:n_images],
            held_voxels, images[n_images:])


def first_tick_wins(calls: list):
    """A hold-out scorer whose first call (the first tick) scores 0.8 above every later one, on every image."""
    def values(recon):
        assert len(recon) == N_HELD
        calls.append(recon)
        return np.linspace(0.0, 0.05, N_HELD) + (0.9 if len(calls) == 1 else 0.1)
    return values


def _train_data(ctx, trials, held_voxels, scorer):
    from stage2_generate.methods import TestData, TrainData

    held = TestData("sub-01", "VC", "__validation__", [f"h{i}" for i in range(N_HELD)], [], held_voxels) \
        if scorer is not None else None
    return TrainData(ctx, "sub-01", "VC", trials, held, None, scorer)


def _brain_file(cfg):
    from shared.datasets import DataSource, brain_file

    path = brain_file(DataSource.of(cfg), "sub-01", "train")  # its size and time enter the training key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"voxels")


@pytest.mark.parametrize("held", [True, False])
def test_end_to_end_reconstructs_from_the_chosen_tick(held, tmp_path, rng):
    from shared import checkpoints
    from stage2_generate.generator_files import build_generator
    from stage2_generate.methods import REGISTRY, Context, TestData
    from stage2_generate.models import generate

    cfg = _cfg(tmp_path, "methods.run=[end_to_end]")
    _brain_file(cfg)
    trials, names, images, held_voxels, _ = _data(rng)
    ctx = Context.of(cfg, store=None, device=torch.device("cpu"), train_images=images, train_names=names, channels=3)
    calls: list = []
    method = REGISTRY["end_to_end"](ctx).fit(_train_data(ctx, trials, held_voxels, first_tick_wins(calls)
                                                         if held else None))
    test = TestData("sub-01", "VC", "natural", ["t0", "t1", "t2"], [], held_voxels[:3] + 0.1)
    out = method.reconstruct(test)
    (folder,) = (tmp_path / "work" / "tiny" / "generator").iterdir()

    def drawn_by(state_dict):
        G = build_generator(cfg.generator, [(trials.X.shape[1],)], 3, "cpu", images.mean(axis=0))
        G.load_state_dict(state_dict)
        return generate(G.eval(), [method.x_std.transform(test.voxels)], "cpu")

    last = drawn_by(checkpoints.load(folder / "checkpoint.pt")["generator_ema"])  # the step-4 EMA
    record = method.row()["training"]
    if held:
        assert len(calls) == 2  # one scoring per tick (steps 2 and 4)
        best = checkpoints.load(folder / "best.pt")
        assert best["step"] == 2 and record["step"] == 2 and record["tick_choice"]["beyond_noise"]
        np.testing.assert_array_equal(out, drawn_by(best["generator"]))
        assert np.abs(out - last).max() > 1e-6  # the two ticks draw differently: the choice mattered
        assert record["holdout_images"] == N_HELD and not record["holdout_too_small"]
    else:
        assert record["step"] == 4 and record["tick_rule"].startswith("No validation hold-out")
        np.testing.assert_array_equal(out, last)
        assert not (folder / "best.pt").exists()


@pytest.mark.parametrize("held", [True, False])
def test_the_vae_coder_is_kept_at_the_chosen_tick(held, tmp_path, rng):
    from shared import checkpoints
    from stage2_generate.methods import REGISTRY, Context, TestData
    from stage2_generate.methods._coder_nets import decode
    from stage2_generate.methods._image_coder import coder_folder

    cfg = _cfg(tmp_path, "methods.run=[vae]")
    trials, names, images, held_voxels, held_images = _data(rng)
    ctx = Context.of(cfg, store=None, device="cpu", train_images=images, train_names=names, channels=3,
                     held_images=held_images if held else None)
    calls: list = []
    method = REGISTRY["vae"](ctx)
    method.check()  # the key it checks is the key it trains under
    method.fit(_train_data(ctx, trials, held_voxels, first_tick_wins(calls) if held else None))
    folder, _ = coder_folder(cfg, "vae", 3, images, held)
    kept = {k: v for k, v in method.coder.state_dict().items()}
    last = checkpoints.load(folder / "checkpoint.pt")["coder"]
    tick = method.settings()["vae_tick"]
    if held:
        assert len(calls) == 2  # the held-out images autoencoded at steps 2 and 4
        np.testing.assert_allclose(calls[0], decode(method.coder, method.coder.encode(
            torch.from_numpy(held_images))[0].numpy(), "cpu"), atol=1e-6)  # what was scored: their autoencoding
        best = checkpoints.load(folder / "best.pt")
        assert best["step"] == 2 and tick["step"] == 2 and tick["beyond_noise"] and "autoencoding" in tick["chosen_by"]
        assert all(torch.equal(kept[k], best["coder"][k]) for k in kept)
        assert any(not torch.equal(kept[k], last[k]) for k in kept)
    else:
        assert tick["step"] == 4 and tick["chosen_by"] is None
        assert all(torch.equal(kept[k], last[k]) for k in kept)
    out = method.reconstruct(TestData("sub-01", "VC", "natural", ["t0", "t1"], [], held_voxels[:2]))
    np.testing.assert_allclose(out, decode(method.coder, method.fitted.predict(held_voxels[:2]), "cpu"), atol=1e-6)
    # a coder kept at its best tick and one kept at its last never share a folder (nor a cached coder.pt)
    assert coder_folder(cfg, "vae", 3, images, True)[0] != coder_folder(cfg, "vae", 3, images, False)[0]


def test_latent_regression_keeps_the_tuned_map_of_the_chosen_tick(tmp_path, rng):
    """The first tuning tick is the ridge map before any step: rigged to win, the method reconstructs from it."""
    from stage2_generate.methods import REGISTRY, Context, TestData
    from stage2_generate.methods._coder_nets import decode, encode_means

    cfg = _cfg(tmp_path, "methods.run=[latent_regression]", "methods.latent_tune_steps=4",
               "methods.latent_tune_lr=0.05")
    trials, names, images, held_voxels, _ = _data(rng)
    ctx = Context.of(cfg, store=None, device="cpu", train_images=images, train_names=names, channels=3)
    calls: list = []
    train = _train_data(ctx, trials, held_voxels, first_tick_wins(calls))
    method = REGISTRY["latent_regression"](ctx).fit(train)
    assert len(calls) == 3  # tuning steps 0, 2 and 4 (no held-out images in the context: the coder's last tick)
    ridge_W, ridge_b = train.ridge.fit(encode_means(method.coder, images, "cpu")).coef()
    np.testing.assert_allclose(method.W, ridge_W, atol=1e-6)
    np.testing.assert_allclose(method.b, ridge_b, atol=1e-6)
    row = method.row()["tuning"]
    assert row["step"] == 0 and row["last_step"] == 4 and row["beyond_noise"]
    X = held_voxels[:2]
    np.testing.assert_allclose(method.reconstruct(TestData("sub-01", "VC", "natural", ["a", "b"], [], X)),
                               decode(method.coder, method.x_std.transform(X) @ ridge_W + ridge_b, "cpu"), atol=1e-5)
    assert method.settings()["autoencoder_tick"]["chosen_by"] is None


def test_the_choice_survives_a_resume_to_more_steps(tmp_path, rng, caplog):
    """Trained 2 steps, then resumed to 4: the step-2 tick (rigged to win) is remembered through the checkpoint."""
    import logging

    from stage2_generate.methods import REGISTRY, Context

    trials, names, images, held_voxels, _ = _data(rng)
    calls: list = []
    scorer = first_tick_wins(calls)
    for steps in (2, 4):
        cfg = _cfg(tmp_path, "methods.run=[end_to_end]", f"generator.iterations={steps}")
        if steps == 2:  # once: the file's time enters the training key
            _brain_file(cfg)
        ctx = Context.of(cfg, store=None, device=torch.device("cpu"), train_images=images, train_names=names,
                         channels=3)
        with caplog.at_level(logging.INFO):
            method = REGISTRY["end_to_end"](ctx).fit(_train_data(ctx, trials, held_voxels, scorer))
    assert "resuming end_to_end sub-01 VC training at step 2" in caplog.text and len(calls) == 2
    record = method.row()["training"]
    assert record["step"] == 2 and record["tick_choice"]["last_step"] == 4 and record["tick_choice"]["beyond_noise"]


def test_the_summary_names_each_trained_methods_tick_and_why():
    from shared.report import _method_ticks

    recon = {"sub-01": {
        "wgan_gp": {"pixcorr": 0.5},  # the generator has its own section
        "end_to_end": {"pixcorr": 0.4, "training": {"step": 40, "holdout_too_small": False, "holdout_images": 12,
                                                    "tick_choice": {"beyond_noise": True, "gain": 0.02}}},
        "end_to_end[V1]": {"training": {"step": 60, "holdout_too_small": False, "tick_choice": {"beyond_noise": False}}},
        "latent_regression": {"tuning": {"step": 4, "holdout_too_small": True, "holdout_images": 3}}}}
    lines = _method_ticks(recon)
    assert not any("wgan_gp" in line for line in lines) and len(lines) == 5
    assert "- `end_to_end` (sub-01): step 40 reconstructs; it beat the last tick beyond noise (+0.020)" in lines
    assert "- `end_to_end[V1]` (sub-01): step 60 reconstructs; no earlier tick beat the last beyond noise" in lines
    assert any("`latent_regression`" in line and "(3 images) is too small" in line for line in lines)
    assert _method_ticks({"sub-01": {"wgan_gp": {"pixcorr": 0.5}}}) == []


@pytest.mark.parametrize("name", ["end_to_end", "vae"])
def test_under_stage_2_a_fit_outside_its_lock_folders_fails_loudly(name, tmp_path, rng):
    """Stage 2 takes every folder its methods train in up front, in one order (``lock_folders``, then
    ``acquire_in_order``): a fit that would train in another folder (its ``lock_folders`` out of step with it) is an
    internal error, never a lock taken out of order; with the folders it lists, it trains. A coder whose tick is
    chosen on the hold-out (``held_images``) given no hold-out scorer is refused alike: it would train elsewhere."""
    from shared.locks import ExperimentLock, acquire_in_order
    from stage2_generate.methods import REGISTRY, Context

    cfg = _cfg(tmp_path, f"methods.run=[{name}]")
    _brain_file(cfg)
    trials, names, images, held_voxels, held_images = _data(rng)
    ctx = Context.of(cfg, store=None, device=torch.device("cpu"), train_images=images, train_names=names, channels=3,
                     held_images=held_images)
    method = REGISTRY[name](ctx)
    train = _train_data(ctx, trials, held_voxels, first_tick_wins([]))
    for folders, fails in [({tmp_path / "generator": "the generator"}, True), (method.lock_folders(), False)]:
        locks = acquire_in_order(folders)
        try:
            if fails:
                with pytest.raises(RuntimeError, match=r"^internal error: the .* is not among the folders this run "
                                                       r"locked up front"):
                    method.fit(train)
            else:
                method.fit(train)
        finally:
            for lock in locks:
                lock.release()
    assert not ExperimentLock._ordered
    if name == "vae":
        with pytest.raises(RuntimeError, match=r"^internal error: the vae coder chooses its tick on the hold-out"):
            REGISTRY[name](Context.of(cfg, store=None, device="cpu", train_images=images, train_names=names,
                                      channels=3, held_images=held_images)).coder
