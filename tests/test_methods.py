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
    from stage2_generate.inversion import layer_weights, norm_corrected, typical_sd

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
    from stage2_generate.inversion import invert
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
    r = run_cli("stage2_generate", "run", "--config", str(config), "--set",
                "methods.run=[inversion_dgn, inversion_pixels]", "--set", "methods.inversion_iterations=20")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("inversion_dgn", "inversion_pixels"):
        losses = [(float(a), float(b)) for a, b in re.findall(rf"{name} sub-01 VC natural .*feature loss (\S+) -> (\S+)",
                                                                r.stderr)]
        assert losses and all(b < a for a, b in losses), (name, losses)
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    rows = metrics["reconstruction"]["sub-01"]
    assert {"wgan_gp", "inversion_dgn", "inversion_pixels", "pixel_ridge", "nearest_train"} <= set(rows)
    for name in ("inversion_dgn", "inversion_pixels"):
        assert all(np.isfinite(rows[name][k]) for k in ("pixcorr", "ssim", "alexnet2", "pairwise_id_pixel"))
        assert (tmp_path / "results" / "tiny" / "reconstructions" / "sub-01" / "VC" / "natural" / f"{name}.h5").is_file()
    assert metrics["reconstruction_info"]["methods"]["run"] == ["inversion_dgn", "inversion_pixels"]
    # the generator's own reconstruction is untouched by the refinement
    assert rows["wgan_gp"] == tiny_finished.metrics["reconstruction"]["sub-01"]["wgan_gp"]
