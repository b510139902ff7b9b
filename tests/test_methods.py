"""The published methods (``methods.run``): each one's defining property on tiny data, and a run of
stage 2 that scores them beside the generator and the baselines."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli, write_tiny_config


def test_norm_correction_and_layer_weights_follow_the_paper():
    from stage2_generate.methods._inversion import layer_weights, norm_corrected, typical_sd

    rng = np.random.default_rng(0)
    true = rng.normal(0.5, 2.0, size=(40, 300))
    assert typical_sd(true) == pytest.approx(2.0, rel=0.05)

    class Chunked:  # a store array, read 64 units at a time
        def iter_units(self, chunk):
            for s in range(0, true.shape[1], chunk):
                yield slice(s, s + chunk), true[:, s:s + chunk]

    assert typical_sd(Chunked(), chunk=64) == pytest.approx(typical_sd(true), rel=1e-10)
    decoded = 0.1 * rng.normal(size=(5, 300)) + 3.0  # decoding shrinks features
    fixed = norm_corrected(decoded, typical_sd(true))
    assert np.allclose(fixed.std(axis=1, ddof=1), typical_sd(true), rtol=1e-4)
    assert np.allclose(fixed.mean(axis=1), decoded.mean(axis=1), atol=1e-4)
    assert np.allclose(np.corrcoef(fixed[0], decoded[0])[0, 1], 1.0)
    targets = {"a": torch.ones(2, 10), "b": 2 * torch.ones(2, 40)}  # squared norms 10 and 160
    w = layer_weights(targets)
    assert torch.allclose(w["a"] + w["b"], torch.ones(2))
    assert torch.allclose(w["a"] / w["b"], torch.full((2,), 16.0))


@pytest.mark.parametrize("prior", ["pixels", "generator"])
def test_inversion_lowers_the_feature_loss_it_optimises(prior, rng):
    from shared.featnet import FeatureNet
    from stage2_generate.methods._inversion import invert
    from stage2_generate.models import Generator

    torch.manual_seed(0)
    net = FeatureNet("vgg19", "random:0", ["conv2_2", "conv3_4", "fc7"], input_size=32).eval()
    images = torch.from_numpy(rng.uniform(size=(4, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        targets = net(images)
    if prior == "pixels":
        variables = [torch.full((4, 3, 32, 32), 0.5)]
        render, clamp, scale = (lambda v: v[0]), True, float(images.std())
    else:
        G = Generator([(256, 8, 8), (4096,)], 32, 8, 3).eval().requires_grad_(False)
        for conv in G.to_image:  # an untrained generator outputs its mean image alone: give it image weights
            conv.reset_parameters()
        variables = [torch.randn(4, 256, 8, 8), torch.randn(4, 4096)]
        render, clamp, scale = G, False, 1.0
    out, history = invert(net, targets, variables, render, 40, (0.05 * scale, 0.0), 0.9, clamp)
    assert history.shape == (41, 4)
    assert (history[-1] < 0.7 * history[0]).all(), history[[0, -1]]  # every image, not just the mean
    assert out.shape == (4, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_stage2_scores_the_methods_beside_the_generator(tiny_finished, tmp_path):
    for name in ("work", "results"):
        shutil.copytree(tiny_finished.folder / name, tmp_path / name)
    config = write_tiny_config(tmp_path, tiny_finished.data)
    published = ["inversion_dgn", "inversion_pixels", "end_to_end", "latent_regression", "vae"]
    r = run_cli("stage2_generate", "run", "--config", str(config), "--set", f"methods.run=[{', '.join(published)}]",
                "--set", "methods.inversion_iterations=20", "--set", "methods.coder_iterations=10",
                "--set", "methods.latent_tune_steps=6")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("inversion_dgn", "inversion_pixels"):
        losses = [(float(a), float(b)) for a, b in re.findall(rf"{name} sub-01 VC natural .*feature loss (\S+) -> (\S+)",
                                                                r.stderr)]
        assert losses and all(b < a for a, b in losses), (name, losses)
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    rows = metrics["reconstruction"]["sub-01"]
    assert {"wgan_gp", *published, "pixel_ridge", "nearest_train"} <= set(rows)
    for name in published:
        assert all(np.isfinite(rows[name][k]) for k in ("pixcorr", "ssim", "alexnet2", "pairwise_id_pixel"))
        assert (tmp_path / "results" / "tiny" / "reconstructions" / "sub-01" / "VC" / "natural" / f"{name}.h5").is_file()
    info = metrics["reconstruction_info"]["methods"]
    assert info["run"] == published and info["coder"]["coder_iterations"] == 10
    tuning = info["latent_tuning_loss"]["sub-01/VC"]
    assert len(tuning) == 4 and np.isfinite(tuning).all()  # ticks at steps 0, 2, 4, 6 (descent: the unit test)
    # the end-to-end generator's one input is the ROI's voxels (no decoded features)
    from shared.checkpoints import load
    from shared.datasets import DataSource, load_split
    from shared.config import load_config

    n_voxels = load_split(DataSource.of(load_config(config)), "sub-01", "train", "VC", average=False).X.shape[1]
    shapes = [load(p, "cpu")["input_shapes"] for p in (tmp_path / "work" / "tiny" / "generator").glob("*/generator.pt")]
    assert [(n_voxels,)] in shapes  # the end-to-end generator
    assert all(s in ([(n_voxels,)], tiny_generator_shapes(tiny_finished)) for s in shapes)  # and the WGAN-GP one(s)
    # the generator's own reconstruction is untouched by the other methods
    assert rows["wgan_gp"] == tiny_finished.metrics["reconstruction"]["sub-01"]["wgan_gp"]


def tiny_generator_shapes(finished):
    from shared.checkpoints import load

    (path,) = (finished.work / "generator").glob("*/generator.pt")
    return load(path, "cpu")["input_shapes"]


# ------------------------------------------------------------------ the methods that start from the voxels

def _tiny_cfg(tmp_path, **methods):
    from shared.config import load_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    sets = [f"methods.{k}={v}" for k, v in methods.items()]
    return load_config(write_tiny_config(tmp_path, tmp_path / "data"), sets)


def _trials(rng, n_images=30, reps=3, n_voxels=50):
    """Voxels of ``reps`` trials per image, partly explained by a hidden image code ``(n_images, 6)``."""
    from shared.datasets import SplitData

    code = rng.normal(size=(n_images, 6))
    mix = rng.normal(size=(6, n_voxels))
    names = np.array([f"im{i:02d}" for i in range(n_images)] * reps)
    img = np.tile(np.arange(n_images), reps)
    X = (code[img] @ mix + 0.5 * rng.normal(size=(len(img), n_voxels)) + 3.0).astype(np.float32)
    return SplitData(X, names, "VC", None), [f"im{i:02d}" for i in range(n_images)], code


def test_voxel_ridge_equals_scikit_learn_ridge_on_any_targets(tmp_path, rng):
    from sklearn.linear_model import Ridge

    from shared.ridge import Standardiser
    from stage2_generate.methods._voxel_ridge import VoxelRidge

    cfg = _tiny_cfg(tmp_path)
    train, names, code = _trials(rng)
    Y = (code @ rng.normal(size=(6, 9)) * 4 + 1).astype(np.float32)  # e.g. latent codes of the training images
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    fit = vr.fit(Y, alphas=[30.0])
    Xz = Standardiser().fit(train.X).transform(train.X)
    ref = Ridge(alpha=30.0).fit(Xz, Y[vr.trial_img])
    X_new = train.X[:7] + rng.normal(size=(7, train.X.shape[1])).astype(np.float32)
    np.testing.assert_allclose(fit.predict(X_new), ref.predict(vr.x_std.transform(X_new)), atol=2e-4)
    W, b = fit.coef()  # the explicit map latent_regression starts from and tunes
    np.testing.assert_allclose(W, ref.coef_.T, atol=2e-5)
    np.testing.assert_allclose(vr.x_std.transform(X_new) @ W + b, fit.predict(X_new), atol=2e-4)
    assert vr.fit(Y).alpha in cfg.decoder.alphas  # chosen by cross-validation when not given


def _images(rng, code):
    """Training images ``(n, 3, 32, 32)`` whose colours follow the first three code dimensions."""
    return np.clip(0.5 + 0.15 * (code[:, :3, None, None] + rng.normal(size=(len(code), 3, 32, 32)) * 0.3),
                   0, 1).astype(np.float32)


@pytest.mark.parametrize("name", ["latent_regression", "vae"])
def test_latent_methods_decode_ridges_prediction_of_the_coders_latents(name, tmp_path, rng):
    """What the method reconstructs is the coder's decoding of scikit-learn's ridge from the training
    trials to the coder's latent codes (a VAE's posterior means), before any tuning."""
    from sklearn.linear_model import Ridge

    from stage2_generate.methods import REGISTRY, Context, TestData, TrainData
    from stage2_generate.methods._coder_nets import decode, encode_means
    from stage2_generate.methods._voxel_ridge import VoxelRidge

    cfg = _tiny_cfg(tmp_path, run=f"[{name}]", coder_iterations=20, coder_latent=8, latent_tune_steps=0)
    cfg = replace_decoder(cfg, alphas=[30.0])
    train, names, code = _trials(rng)
    images = _images(rng, code)
    ctx = Context.of(cfg, store=None, device="cpu", train_images=images, train_names=names, channels=3)
    method = REGISTRY[name](ctx)
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    X_test = train.X[:6] + rng.normal(size=(6, train.X.shape[1])).astype(np.float32)
    out = method.fit(TrainData(ctx, "sub-01", "VC", train)).reconstruct(
        TestData("sub-01", "VC", "natural", [f"t{i}" for i in range(6)], [], X_test))
    coder = method.coder
    assert coder.variational == (name == "vae")
    latents = encode_means(coder, images, "cpu")
    ref = Ridge(alpha=30.0).fit(vr.x_std.transform(train.X), latents[vr.trial_img])
    np.testing.assert_allclose(out, decode(coder, ref.predict(vr.x_std.transform(X_test)).astype(np.float32), "cpu"),
                               atol=2e-4)
    assert (tmp_path / "work" / "tiny" / "coders" / ("vae" if name == "vae" else "autoencoder")).is_dir()


def replace_decoder(cfg, **values):
    from dataclasses import replace

    return replace(cfg, decoder=replace(cfg.decoder, **values))


def test_latent_regression_tuning_lowers_its_loss_through_the_frozen_decoder(tmp_path, rng):
    from stage2_generate.methods._voxel_ridge import VoxelRidge
    from stage2_generate.methods._coder_nets import encode_means
    from stage2_generate.methods._image_coder import train_coder
    from stage2_generate.methods.latent_regression import tune_latent_map

    cfg = _tiny_cfg(tmp_path, coder_iterations=30, coder_latent=8, latent_tune_steps=12, latent_tune_lr=0.01)
    train, names, code = _trials(rng)
    images = _images(rng, code)
    coder = train_coder(cfg, "autoencoder", images, 3, "cpu")
    vr = VoxelRidge(cfg.decoder, cfg.seed, train, names, "cpu")
    W, b = vr.fit(encode_means(coder, images, "cpu")).coef()
    W1, b1, history = tune_latent_map(cfg, coder, W, b, vr.x_std.transform(train.X), vr.trial_img, images, "cpu")
    assert len(history) == 7 and history[-1] < history[0], history  # ticks every 2 steps, and the end
    assert np.abs(W1 - W).max() > 1e-4


def test_coder_training_resumes_to_what_one_uninterrupted_training_gives(tmp_path, rng, caplog):
    import logging

    from shared.errors import UserError
    from stage2_generate.methods._coder_nets import encode_means
    from stage2_generate.methods._image_coder import check_coder, train_coder

    images = _images(rng, rng.normal(size=(20, 6)))
    straight = encode_means(train_coder(_tiny_cfg(tmp_path / "a", coder_iterations=8), "vae", images, 3, "cpu"),
                            images, "cpu")
    train_coder(_tiny_cfg(tmp_path / "b", coder_iterations=4), "vae", images, 3, "cpu")
    with caplog.at_level(logging.INFO):
        longer = train_coder(_tiny_cfg(tmp_path / "b", coder_iterations=8), "vae", images, 3, "cpu")
    assert "resuming vae training at step 4" in caplog.text
    np.testing.assert_allclose(encode_means(longer, images, "cpu"), straight, atol=1e-5)
    caplog.clear()
    with caplog.at_level(logging.INFO):  # finished: reused, not trained again
        train_coder(_tiny_cfg(tmp_path / "b", coder_iterations=8), "vae", images, 3, "cpu")
    assert "already trained for 8 steps" in caplog.text and "resuming" not in caplog.text
    with pytest.raises(UserError, match="holds 8 vae steps, more than methods.coder_iterations=2"):
        check_coder(_tiny_cfg(tmp_path / "b", coder_iterations=2), "vae", 3, images)


def test_vae_lowers_its_bound_and_its_latent_targets_are_the_posterior_means(tmp_path, rng):
    import torch

    from stage2_generate.methods._coder_nets import ImageCoder, encode_means, vae_loss
    from stage2_generate.methods._image_coder import train_coder

    cfg = _tiny_cfg(tmp_path, coder_iterations=60, coder_latent=8)
    images = rng.uniform(0.2, 0.8, size=(30, 3, 32, 32)).astype(np.float32)
    images[:15, 0] = 0.9  # two kinds of image
    torch.manual_seed(cfg.generator.seed)
    untrained = ImageCoder(32, cfg.generator.base_channels, 8, 3, variational=True).eval()
    coder = train_coder(cfg, "vae", images, 3, "cpu")

    def bound(c):
        x = torch.from_numpy(images)
        with torch.no_grad():
            mean, logvar = c.encode(x)
            err, kl = vae_loss(c.decode(mean), x, mean, logvar, 1.0)
        return float(err + kl)

    assert bound(coder) < 0.8 * bound(untrained)
    means = encode_means(coder, images, "cpu")  # the posterior means, not samples: deterministic
    np.testing.assert_array_equal(means, encode_means(coder, images, "cpu"))
    with torch.no_grad():
        mean, _ = coder.encode(torch.from_numpy(images))
    np.testing.assert_allclose(means, mean.numpy(), atol=1e-6)


def test_end_to_end_trains_on_one_trial_of_each_drawn_image(rng):
    import torch

    from stage2_generate.methods.end_to_end import TrialSampler

    trial_img = np.array([0, 1, 2, 0, 1, 0, 2, 0])  # image 0 has four trials, 1 and 2 two
    Xz = np.arange(8, dtype=np.float32)[:, None].repeat(3, axis=1)  # row r holds r
    sampler = TrialSampler.build(Xz, trial_img, 3, "cpu")
    np.testing.assert_allclose(sampler.true[0][:, 0].numpy(), [(0 + 3 + 5 + 7) / 4, (1 + 4) / 2, (2 + 6) / 2])
    gen = torch.Generator().manual_seed(0)
    idx = torch.zeros(4000, dtype=torch.long)
    rows = sampler(idx, gen)[0][:, 0].long().numpy()
    assert set(rows) == {0, 3, 5, 7}  # only image 0's trials
    assert np.bincount(rows, minlength=8)[[0, 3, 5, 7]].min() > 850  # each about equally often
    rows = sampler(torch.tensor([1, 2, 1, 2]), gen)[0][:, 0].long().numpy()
    assert all(trial_img[r] == i for r, i in zip(rows, [1, 2, 1, 2]))


def test_end_to_end_refuses_training_images_without_a_trial_before_writing(tmp_path, rng):
    from shared.errors import UserError
    from stage2_generate.methods import end_to_end

    cfg = _tiny_cfg(tmp_path, run="[end_to_end]")
    train, names, code = _trials(rng, n_images=10)
    images = _images(rng, code)
    from shared.datasets import DataSource, brain_file

    brain_file(DataSource.of(cfg), "sub-01", "train").parent.mkdir(parents=True)
    brain_file(DataSource.of(cfg), "sub-01", "train").write_bytes(b"voxels")  # its size and time enter the training key
    end_to_end.preflight(cfg, "sub-01", "VC", train, names, images, 3)  # every image has trials: no error
    with pytest.raises(UserError, match="2 training images have no trial in"):
        end_to_end.preflight(cfg, "sub-01", "VC", train, [*names, "extra1", "extra2"], images, 3)
    assert not (tmp_path / "work").exists()
