"""The methods registry: its names are the ones configs are validated against, and every registered
method reconstructs through the one interface on tiny data."""

from __future__ import annotations

import shutil

import numpy as np

from conftest import write_tiny_config
from shared import config as config_module
from stage2_generate.methods import REGISTRY, Method, of_role, selected


def test_registry_names_are_the_validated_tuple():
    assert tuple(REGISTRY) == config_module.METHODS
    assert tuple(of_role("published")) == config_module.PUBLISHED
    assert tuple(of_role("baseline")) == config_module.BASELINES
    assert config_module.BASELINES_FROM_VOXELS == tuple(b for b in config_module.BASELINES if REGISTRY[b].reads == "voxels")
    assert (*of_role("generator"), *of_role("reference")) == config_module.GENERATOR_ROWS
    assert tuple(of_role("blend")) == config_module.BLENDS
    assert {cls.role for cls in REGISTRY.values()} == {"generator", "blend", "published", "baseline", "reference"}
    assert all(issubclass(cls, Method) and cls.name == name for name, cls in REGISTRY.items())
    assert all(cls.reads in ("features", "voxels") for cls in REGISTRY.values())
    order = [c.name for c in selected(["vae", "inversion_pixels"], baselines=True)]
    assert order == ["wgan_gp", "inversion_pixels", "vae", "pixel_ridge", "nearest_train", "wgan_gp_true_features"]
    assert [c.name for c in selected([], baselines=False)] == ["wgan_gp", "wgan_gp_true_features"]
    assert [c.name for c in selected([], baselines=False, blend=True)] == ["wgan_gp", "wgan_gp_blend",
                                                                          "wgan_gp_true_features"]


def test_every_registered_method_runs_through_the_interface(tiny_finished, tmp_path):
    """Each method is built from one Context, fitted on one subject's and ROI's training trials and draws
    the test images: images of the generator's size in [0, 1], one per test image."""
    from shared.config import load_config
    from shared.datasets import DataSource, load_split, split_image_names, split_images
    from stage2_generate.conditioning import decoded_inputs, fit_transforms
    from stage2_generate.generator_files import build_generator
    from shared.store import ExperimentStore
    from stage2_generate.methods import Context, TestData, TrainData

    shutil.copytree(tiny_finished.folder / "work", tmp_path / "work")
    config = write_tiny_config(tmp_path, tiny_finished.data)
    cfg = load_config(config, ["methods.inversion_iterations=2", "methods.coder_iterations=2",
                               "methods.latent_tune_steps=2", "generator.iterations=2"])
    store = ExperimentStore(cfg)
    g = cfg.generator
    names = split_image_names(DataSource.of(cfg), "train")[:40]
    transforms, inputs = fit_transforms(g.condition_layers, g.image_size, store,
                                        split_image_names(DataSource.of(cfg), "train"),
                                        names, cfg.decoder.chunk_units)
    rows = [split_image_names(DataSource.of(cfg), "train").index(n) for n in names]
    images = split_images(DataSource.of(cfg), "train", names, g.image_size)
    G = build_generator(g, [tuple(x.shape[1:]) for x in inputs], 3, "cpu", images.mean(axis=0)).eval()
    ctx = Context.of(cfg, store=store, device="cpu", train_images=images, train_names=names, channels=3, G=G,
                     transforms=transforms, train_inputs=[x[rows] for x in inputs])
    train = TrainData(ctx, "sub-01", "VC",
                      load_split(DataSource.of(cfg), "sub-01", "train", "VC", average=False).of_images(names))
    test_data = load_split(DataSource.of(cfg), "sub-01", "natural", "VC", average=True)
    dec, test_names = decoded_inputs(store, transforms, "sub-01", "VC", "natural")
    order = {n: i for i, n in enumerate(test_data.names)}
    test = TestData("sub-01", "VC", "natural", list(test_names), dec,
                    test_data.X[[order[n] for n in test_names]])
    drawn = {}
    for name, cls in REGISTRY.items():
        method = cls(ctx)
        method.check()
        out = method.fit(train).reconstruct(test)
        assert out.shape == (len(test_names), 3, g.image_size, g.image_size), name
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, name
        assert isinstance(method.settings(), dict) and isinstance(method.row(), dict), name
        drawn[name] = out
    # the untrained generator draws its mean image whatever it is given; nearest_train a training image
    np.testing.assert_allclose(drawn["wgan_gp"], np.broadcast_to(images.mean(axis=0), drawn["wgan_gp"].shape),
                               atol=1e-5)
    assert all(any(np.array_equal(img, t) for t in images) for img in drawn["nearest_train"])
    np.testing.assert_array_equal(drawn["wgan_gp_blend"], drawn["wgan_gp"])  # no hold-out: a = 1, the generator's
    assert "alpha" in REGISTRY["pixel_ridge"](ctx).fit(train).row()



def test_every_method_describes_itself_for_the_summary():
    """The summary's method paragraph is each method's own ``describe`` (the text lives with the method)."""
    from stage2_generate.methods import REGISTRY

    missing = [name for name, cls in REGISTRY.items() if len(cls.describe) < 20]
    assert not missing, f"methods without a describe text: {missing}"
