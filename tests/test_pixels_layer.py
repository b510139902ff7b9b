"""The low-level pathway: ``pixels<N>`` layers decoded by stage 1, pixel ridge reading them, and a generator that
starts from the decoded image (``generator.start: decoded_pixels``)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import Ridge

from conftest import TINY, run_cli
from shared.config import load_config
from shared.datasets import DataSource, SplitData, load_split, split_image_names, split_images
from shared.errors import UserError
from shared.evaluation import at_size
from shared.holdout import validation_split
from shared.featnet import FeatureNet
from shared.store import ExperimentStore

LAYERS = ["pixels8", "pixels16", "fc7"]


@pytest.fixture(scope="module")
def pixels_run(tmp_path_factory):
    """The tiny experiment with pixels8 / pixels16 decoded, the generator conditioned on pixels16 and started from
    it, a fifth of the training images held out; both stages through the command line."""
    folder = tmp_path_factory.mktemp("pixels")
    cfg = {**TINY, "data": {**TINY["data"], "root": str(folder / "data")}, "work_dir": str(folder / "work"),
           "results_dir": str(folder / "results"),
           "features": {**TINY["features"], "layers": LAYERS},
           "decoder": {**TINY["decoder"], "alphas": [1.0, 100.0, 10000.0]},
           "generator": {**TINY["generator"], "condition_layers": ["pixels16", "fc7"], "start": "decoded_pixels",
                         "consistency_layers": ["pixels16"]},
           "eval": {**TINY["eval"], "validation_fraction": 0.2, "blend": True}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for module in ("stage1_decode", "stage2_generate"):
        r = run_cli(module, "run", "--config", str(path))
        assert r.returncode == 0, r.stderr[-3000:]
    return load_config(path)


def test_true_pixels_are_the_stimuli_area_averaged_from_the_feature_network_input(pixels_run):
    cfg = pixels_run
    store, src = ExperimentStore(cfg), DataSource.of(cfg)
    for split in ("train", "natural"):
        names = split_image_names(src, split)
        images = split_images(src, split, names, cfg.features.input_size)
        for side in (8, 16):
            with store.open_true(f"pixels{side}", split, names=names) as arr:
                assert arr.unit_shape == (3, side, side)  # colour stimuli: three channels
                np.testing.assert_allclose(arr.read(arr.rows_for(names)),
                                           at_size(images, side).reshape(len(names), -1), atol=1e-6)


def test_a_grayscale_set_has_one_pixel_channel_and_the_feature_network_computes_it_alike(rng):
    gray = np.repeat(rng.uniform(size=(5, 1, 32, 32)).astype(np.float32), 3, axis=1)
    net = FeatureNet("vgg19", "random:0", ["pixels8", "conv1_1"], input_size=32, pixel_channels=1)
    out = net(torch.from_numpy(gray))
    assert tuple(out["pixels8"].shape) == (5, 1, 8, 8) and "conv1_1" in out
    np.testing.assert_allclose(out["pixels8"].numpy(), at_size(gray, 8)[:, :1], atol=1e-6)
    assert list(out) == ["pixels8", "conv1_1"]  # the input comes first, as layer_order sorts it


def test_a_grayscale_set_decodes_one_pixel_channel_and_its_generator_starts_from_it(tmp_path):
    """Gray stimuli (the strokes preset's) through stage 1: the pixels layer has one channel, and a one-channel
    generator started from it draws the decoded image, repeated to RGB."""
    from stage2_generate.conditioning import decoded_inputs, fit_transforms
    from stage2_generate.generator_files import build_generator
    from stage2_generate.models import generate

    cfg = {**TINY, "data": {**TINY["data"], "root": str(tmp_path / "data")}, "work_dir": str(tmp_path / "work"),
           "results_dir": str(tmp_path / "results"), "simulation": {**TINY["simulation"], "stimuli": "strokes"},
           "features": {**TINY["features"], "layers": ["pixels8", "fc7"]},
           "generator": {**TINY["generator"], "condition_layers": ["pixels8", "fc7"], "start": "decoded_pixels",
                         "consistency_layers": []}}
    path = tmp_path / "gray.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_cli("stage1_decode", "run", "--config", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = load_config(path)
    store, src = ExperimentStore(cfg), DataSource.of(cfg)
    names = split_image_names(src, "train")
    with store.open_true("pixels8", "train", names=names) as arr:
        assert arr.unit_shape == (1, 8, 8)
        gray = at_size(split_images(src, "train", names, cfg.features.input_size), 8)[:, :1]
        np.testing.assert_allclose(arr.read(arr.rows_for(names)), gray.reshape(len(names), -1), atol=1e-6)
    transforms, true = fit_transforms(["pixels8", "fc7"], cfg.generator.image_size, store, names)
    inputs, test_names = decoded_inputs(store, transforms, "sub-01", "VC", "natural")
    G = build_generator(cfg.generator, [x.shape[1:] for x in true], 1, "cpu", transforms=transforms).eval()
    with store.open_decoded("sub-01", "VC", "pixels8", "natural") as arr:
        decoded = arr.read(arr.rows_for(test_names)).reshape(len(test_names), 1, 8, 8)
    expected = np.clip(at_size(decoded, cfg.generator.image_size, clip=False), 0, 1)
    np.testing.assert_allclose(generate(G, inputs, "cpu"), np.repeat(expected, 3, axis=1), atol=1e-5)


def test_decoded_test_pixels_equal_a_direct_sklearn_ridge_from_the_voxels(pixels_run):
    cfg = pixels_run
    store, src = ExperimentStore(cfg), DataSource.of(cfg)
    fit_names, _ = validation_split(split_image_names(src, "train"), cfg.eval.validation_fraction, cfg.seed)
    train = load_split(src, "sub-01", "train", "VC", average=False).of_images(fit_names)  # stage 1 fits on these
    test = load_split(src, "sub-01", "natural", "VC", average=True)
    X, Xt = train.X.astype(np.float64), test.X.astype(np.float64)
    with store.open_true("pixels16", "train") as arr:
        Y = arr.read().astype(np.float64)[arr.rows_for(list(train.names))]  # each trial its image's pixels
    with store.open_decoded("sub-01", "VC", "pixels16", "natural") as arr:
        ours, alpha = arr.read(arr.rows_for(list(test.names))), float(arr.attrs["alpha"])
    xm, xs, ym, ys = X.mean(0), X.std(0), Y.mean(0), Y.std(0)
    ref = Ridge(alpha=alpha, fit_intercept=False).fit((X - xm) / xs, (Y - ym) / np.where(ys > 0, ys, 1))
    expected = ref.predict((Xt - xm) / xs) * np.where(ys > 0, ys, 1) + ym
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_pixel_ridge_rows_are_the_decoded_pixels_layer_brought_to_the_image_size(pixels_run):
    """Pixel ridge reads stage 1's decoded pixels: its test rows are the chosen layer brought to the image size,
    rescaled around the fit images' mean by the contrast gain it chose on the hold-out's decoded pixels."""
    cfg = pixels_run
    store, src = ExperimentStore(cfg), DataSource.of(cfg)
    metrics = json.loads((cfg.results_path / "metrics.json").read_text())
    row = metrics["reconstruction"]["sub-01"]["pixel_ridge"]
    assert row["choices"]["source"] == f"stage 1's decoded pixels{row['pixel_size']}"
    assert set(row["choices"]["size_cv"]) == {"8", "16"}  # both decoded sizes were compared out of fold
    assert "as fitted" in row["choices"]["contrast_validation"]  # the hold-out's decoded pixels were scored
    with h5py.File(cfg.results_path / "reconstructions" / "sub-01" / "VC" / "natural" / "pixel_ridge.h5") as f:
        names = [n.decode() for n in f["names"][()]]
        recon = f["images"][()]
    with store.open_decoded("sub-01", "VC", f"pixels{row['pixel_size']}", "natural") as arr:
        decoded = arr.read(arr.rows_for(names)).reshape(len(names), *arr.unit_shape)
    up = at_size(decoded, cfg.generator.image_size, clip=False)
    fit_names, _ = validation_split(split_image_names(src, "train"), cfg.eval.validation_fraction, cfg.seed)
    mean = split_images(src, "train", fit_names, cfg.generator.image_size).mean(axis=0)
    gain = row["contrast_gain"]
    np.testing.assert_allclose(recon, np.clip(mean + gain * (up - mean) if gain != 1 else up, 0, 1), atol=2e-5)


def test_the_blend_is_the_generator_and_pixel_ridge_mixed_by_the_weight_the_hold_out_chose(pixels_run):
    """``wgan_gp_blend``'s test images are wgan_gp's and pixel ridge's blended by the weight and way the hold-out
    chose (the highest-scoring candidate when it beats the generator's own image beyond noise, else a = 1), so on
    the hold-out it scores at least what the generator scores."""
    from stage2_generate.methods.blend import WEIGHTS, blend

    cfg = pixels_run
    metrics = json.loads((cfg.results_path / "metrics.json").read_text())
    row = metrics["reconstruction"]["sub-01"]["wgan_gp_blend"]
    weight, mode, chosen = row["blend_weight"], row["blend_mode"], row["choices"]["blend"]
    tried, coarse = chosen["validation"], chosen["coarse_px"]
    assert coarse == metrics["reconstruction"]["sub-01"]["pixel_ridge"]["pixel_size"]  # pixel ridge's resolution
    modes = ("whole", "coarse") if coarse < cfg.generator.image_size else ("whole",)
    assert weight in WEIGHTS and set(tried) == {f"{m} {w:.1f}" for m in modes for w in WEIGHTS}
    assert tried[chosen["highest"]] == max(tried.values())
    # the highest candidate reconstructs only when it beats the generator's own image beyond the hold-out's noise
    won = chosen.get("beyond_noise", False)
    assert f"{mode} {weight:.1f}" == (chosen["highest"] if won else "whole 1.0")
    assert chosen["holdout_images"] == metrics["reconstruction_info"]["validation"]["n_images"]
    folder = cfg.results_path / "reconstructions" / "sub-01" / "VC" / "natural"
    images = {}
    for method in ("wgan_gp", "pixel_ridge", "wgan_gp_blend"):
        with h5py.File(folder / f"{method}.h5") as f:
            images[method] = f["images"][()]
    np.testing.assert_allclose(images["wgan_gp_blend"], blend(images["wgan_gp"], images["pixel_ridge"], weight,
                                                              coarse if mode == "coarse" else None), atol=2e-5)
    if mode == "whole":
        np.testing.assert_allclose(images["wgan_gp_blend"],
                                   weight * images["wgan_gp"] + (1 - weight) * images["pixel_ridge"], atol=2e-5)
    held = metrics["reconstruction_validation"]["sub-01"]
    value = lambda m: (held[m]["pixcorr"] + held[m]["ssim"]) / 2  # eval.validation_metric: pixcorr_ssim
    assert cfg.eval.validation_metric == "pixcorr_ssim"
    assert value("wgan_gp_blend") >= value("wgan_gp") - 1e-5  # a = 1, the generator's image, is the fallback


def test_only_pixels_layers_search_past_the_penalty_grid(pixels_run):
    from stage1_decode.items import LayerFiles

    store = ExperimentStore(pixels_run)
    grid = {f"{a:g}" for a in pixels_run.decoder.alphas}
    tried = {la: set(json.loads(LayerFiles(store, "sub-01", "VC", la).done.read_text())["scores"]["natural"][
        "cv_profile_corr"]) for la in ("pixels16", "fc7")}
    assert tried["fc7"] == grid and tried["pixels16"] > grid  # the tiny set's pixels want more than 1e4


def test_a_generator_started_from_decoded_pixels_with_silent_blocks_outputs_the_decoded_image(pixels_run):
    """Built from the store as stage 2 builds it (the transforms, the decoded inputs), with every block's image
    at zero (as untrained), the generator's output is the decoded pixels16 image brought to its size."""
    from stage2_generate.conditioning import decoded_inputs, fit_transforms
    from stage2_generate.generator_files import build_generator
    from stage2_generate.models import generate

    cfg = pixels_run
    store, src = ExperimentStore(cfg), DataSource.of(cfg)
    train_names = split_image_names(src, "train")
    fit_names, _ = validation_split(train_names, cfg.eval.validation_fraction, cfg.seed)
    transforms, true = fit_transforms(cfg.generator.condition_layers, cfg.generator.image_size, store, train_names,
                                      fit_names)
    inputs, names = decoded_inputs(store, transforms, "sub-01", "VC", "natural")
    G = build_generator(cfg.generator, [x.shape[1:] for x in true], 3, "cpu", transforms=transforms).eval()
    with torch.no_grad():
        G.blocks[-1][-2].weight.normal_()  # a block that draws something: its image still goes through a zero 1x1
    with store.open_decoded("sub-01", "VC", "pixels16", "natural") as arr:
        decoded = arr.read(arr.rows_for(names)).reshape(len(names), 3, 16, 16)
    expected = np.clip(at_size(decoded, cfg.generator.image_size, clip=False), 0, 1)
    np.testing.assert_allclose(generate(G, inputs, "cpu"), expected, atol=1e-5)
    with torch.no_grad():
        G.to_image[-1].weight.fill_(0.01)  # once a block's image is not zero the output moves away from it
    assert np.abs(generate(G, inputs, "cpu") - expected).max() > 1e-3


def test_out_of_fold_pixels_never_come_from_a_decoder_that_saw_their_image(tiny_config, tmp_path, rng):
    """Changing one training image's pixels changes no stored out-of-fold pixel row of the images in its fold (their
    decoder never saw it), and does change the others'."""
    from shared.ridge import ImageFolds
    from stage1_decode.decode import decode_subject_roi

    n_img, reps, n_vox = 24, 2, 40
    names = [f"tr{i}" for i in range(n_img)]
    trial_img = np.tile(np.arange(n_img), reps)
    pixels = rng.uniform(size=(n_img, 3, 4, 4)).reshape(n_img, -1)
    X = pixels[trial_img] @ rng.normal(size=(pixels.shape[1], n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    (tmp_path / "a.h5").touch()
    train = SplitData(X.astype(np.float32), np.array(names)[trial_img], "ROI_VC", tmp_path / "a.h5")
    test = SplitData(rng.normal(size=(3, n_vox)).astype(np.float32), np.array(["te0", "te1", "te2"]), "ROI_VC",
                     tmp_path / "a.h5")
    folds = ImageFolds(trial_img, n_img, 3, seed=0)
    victim = folds.held_images[0][0]
    changed = pixels.copy()
    changed[victim] = 1 - changed[victim]
    stored = []
    for run, P in enumerate([pixels, changed]):
        cfg = load_config(tiny_config, ["decoder.alphas=[1.0,100.0,10000.0]", "decoder.cv_folds=3",
                                        "features.layers=[pixels4]", "generator.condition_layers=[pixels4]",
                                        "eval.validation_fraction=0", f"work_dir={tmp_path / f'work{run}'}"])
        store = ExperimentStore(cfg)
        for split, rows, values in (("train", names, P), ("natural", list(test.names), rng.uniform(size=(3, 48)))):
            with store.writer(store.true_file("pixels4", split), rows, 48,
                              {**store.true_expect("pixels4", split), "unit_shape": [3, 4, 4]}) as w:
                w.write_rows(0, values.astype(np.float32))
        decode_subject_roi(cfg, store, "sub-01", "VC", train, {"natural": test}, "cpu", names)
        with store.open_decoded("sub-01", "VC", "pixels4", "train_oof") as arr:
            stored.append(arr.read(arr.rows_for(names)))
    fold = folds.held_images[0]
    np.testing.assert_allclose(stored[1][fold], stored[0][fold], rtol=1e-4, atol=1e-4)
    others = np.setdiff1d(np.arange(n_img), fold)
    assert np.abs(stored[1][others] - stored[0][others]).max() > 1e-3


@pytest.mark.parametrize("sets, message", [
    (["generator.start=decoded_pixels"], "needs a pixels layer"),
    (["features.layers=[pixels64, fc7]"], "larger than the images the feature network sees"),
    (["features.layers=[pixels2, fc7]"], "side must be 4 to 512"),
    (["generator.perceptual_layers=[pixels8]"], "is not a vgg19 layer"),
    (["generator.start=pixels"], "generator.start"),
])
def test_bad_pixel_settings_are_one_line_errors(tiny_config, sets, message):
    with pytest.raises(UserError, match=message):
        load_config(tiny_config, sets)


@pytest.mark.parametrize("kind", ["ridge", "sparse"])
def test_a_pixels_layer_penalty_is_searched_past_the_ends_of_the_grid(rng, kind):
    """Pixel ridge's decoder is stage 1's: for a pixels layer its penalty grid grows past an end while the best
    penalty lies there (for the test rows and for each fold's out-of-fold rows, each on its own folds), as that
    baseline's own grid always did; other layers keep the configured grid."""
    from shared.ridge import ImageFolds, Standardiser
    from stage1_decode.decoders import make_decoder

    n_img, reps, n_vox = 60, 2, 40
    trial_img = np.tile(np.arange(n_img), reps)
    Y = rng.normal(size=(n_img, 10))
    X = Y[trial_img] @ rng.normal(size=(10, n_vox)) + rng.normal(size=(len(trial_img), n_vox))
    Xz = Standardiser().fit(X).transform(X)
    folds = ImageFolds(trial_img, n_img, 3, seed=0)
    dec = make_decoder(kind, "layer", "torch", 30, [1e4, 1e5], Xz, {"natural": Xz[:3]}, folds, "cpu")
    Yz = ((Y - Y.mean(0)) / Y.std(0)).astype(np.float32)
    fixed, grown = dec.choose(Yz, True), dec.choose(Yz, True, extend=True)
    assert fixed.alpha == 1e4 and set(fixed.report) == {"10000", "100000"}  # the low end of the configured grid
    tried = sorted(float(a) for a in grown.report)
    assert grown.alpha < 1e4 and tried[0] < grown.alpha < tried[-1]
    assert len(grown.fold_alphas) == 3 and max(grown.fold_alphas) < 1e4
    out = dec.decode(Yz, grown, True)  # decoding at penalties outside the grid (their hats made on demand)
    assert out.oof.shape == (n_img, 10) and np.all(out.alphas == grown.alpha)
