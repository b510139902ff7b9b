"""Stage 2: multi-resolution generator, training inputs, losses, the independent judge,
saved reconstructions, grayscale sets, determinism and torchrun data parallelism."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import TINY
from shared import metrics as M
from shared.config import load_config
from shared.errors import UserError
from stage2_generate.conditioning import entry_size
from stage2_generate.losses import feature_consistency_loss, normalised_mse
from stage2_generate.models import Generator
from stage2_generate.recon_files import read_reconstructions, save_reconstructions
from stage2_generate.conditioning import ConditionSampler
from test_cli import ENV


def test_conv_maps_enter_at_the_block_of_their_own_size():
    assert [entry_size(h, 64) for h in (2, 4, 7, 14, 16, 28, 32, 56, 112)] == [2, 4, 4, 8, 16, 16, 32, 32, 64]
    assert entry_size(112, 256) == 64
    G = Generator([(8, 16, 16), (4, 32, 32), (10,)], image_size=64, base=8)
    assert G.start == 4 and G.entry == [16, 32, 4] and G.sizes == [4, 8, 16, 32, 64]
    only_conv = Generator([(8, 16, 16), (4, 32, 32)], image_size=64, base=8)
    assert only_conv.start == 16  # no vector input: the generator starts at the coarsest map
    for conv in only_conv.to_image:  # an untrained generator outputs its mean image alone: give it image weights
        conv.reset_parameters()
    # the 32 x 32 map reaches the image through a path that never pools it: a change in one
    # of its pixels changes the output near that place more than far away
    x = [torch.zeros(1, 8, 16, 16), torch.zeros(1, 4, 32, 32)]
    base = only_conv(x)
    x[1][0, :, 2, 2] = 5.0
    diff = (only_conv(x) - base).abs()[0].sum(0)
    assert diff[:12, :12].sum() > 10 * diff[40:, 40:].sum()


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_output_sizes_and_grayscale(size):
    G = Generator([(8, 4, 4), (6,)], image_size=size, base=4, channels=1)
    img = G([torch.randn(2, 8, 4, 4), torch.randn(2, 6)])
    assert img.shape == (2, 3, size, size) and 0 <= img.min() and img.max() <= 1
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 0], img[:, 2])


def test_losses_are_means_of_per_sample_terms():
    """What makes N processes on equal shares equal one process on the whole batch."""
    a, b = torch.randn(8, 5, 3), torch.randn(8, 5, 3)
    halves = (normalised_mse(a[:4], b[:4]) + normalised_mse(a[4:], b[4:])) / 2
    torch.testing.assert_close(halves, normalised_mse(a, b))
    fc = feature_consistency_loss([a], [b])
    torch.testing.assert_close((feature_consistency_loss([a[:4]], [b[:4]]) + feature_consistency_loss([a[4:]], [b[4:]])) / 2, fc)
    # scale-free: a reconstruction whose features are the conditioning times 3 is consistent
    assert float(feature_consistency_loss([3 * b + 1], [b])) < 1e-6


def test_condition_sampler_draws_what_train_inputs_says(tiny_config):
    gen = torch.Generator().manual_seed(0)
    true = [torch.arange(10.0).view(10, 1).repeat(1, 4)]
    oof = [torch.stack([true[0] + 100, true[0] + 200])]  # two sources (subject x ROI)
    idx = torch.arange(10)
    cfg = load_config(tiny_config, ["generator.train_inputs=true"])
    assert torch.equal(ConditionSampler.from_settings(cfg.generator, true, oof, [1.0])(idx, gen)[0], true[0])
    cfg = load_config(tiny_config, ["generator.train_inputs=oof"])
    got = ConditionSampler.from_settings(cfg.generator, true, oof, [1.0])(idx, gen)[0]
    assert set((got - true[0])[:, 0].tolist()) <= {100.0, 200.0}
    cfg = load_config(tiny_config, ["generator.train_inputs=mix", "generator.mix_true=1", "generator.mix_corrupted=0",
                                    "generator.mix_oof=1"])
    got = ConditionSampler.from_settings(cfg.generator, true, oof, [1.0])(torch.arange(10).repeat(50), gen)[0]
    share_true = float((got[:, 0] < 100).float().mean())
    assert 0.4 < share_true < 0.6
    cfg = load_config(tiny_config, ["generator.train_inputs=corrupted", "generator.condition_corr_min=0"])
    got = ConditionSampler.from_settings(cfg.generator, true, None, [1.0])(idx, gen)[0]
    assert not torch.equal(got, true[0])


def test_judge_must_not_be_a_network_training_uses(tiny_config):
    with pytest.raises(UserError, match="the generator's conditioning uses"):  # the feature network itself
        load_config(tiny_config, ["eval.judge_network=vgg19", "eval.judge_weights=random:0",
                                  "eval.judge_layers=[conv2_2]", "generator.loss_feature_consistency=0",
                                  "generator.loss_perceptual=0"])
    with pytest.raises(UserError, match="the perceptual loss uses"):  # the AlexNet that scores, also in the loss
        load_config(tiny_config, ["generator.perceptual_network=alexnet", "generator.perceptual_weights=random:1",
                                  "generator.perceptual_layers=[conv2]"])
    # other weights are other networks
    load_config(tiny_config, ["generator.perceptual_network=alexnet", "generator.perceptual_weights=random:2",
                              "generator.perceptual_layers=[conv2]"])
    load_config(tiny_config, ["eval.judge_network=vgg19", "eval.judge_weights=random:5", "eval.judge_layers=[conv2_2]"])
    all_off = [f"generator.loss_{k}=0" for k in ("adversarial", "pixel", "perceptual", "feature_matching",
                                                 "feature_consistency")]
    with pytest.raises(UserError, match="every generator.loss_"):
        load_config(tiny_config, all_off)
    assert load_config(tiny_config, [*all_off, "generator.loss_ssim=1"]).generator.loss_ssim == 1  # SSIM alone


def test_saved_reconstructions_round_trip(tmp_path, rng):
    images = rng.random((4, 3, 16, 16)).astype(np.float32)
    save_reconstructions(tmp_path, "wgan_gp[HVC]", images, ["a", "b", "c", "d"], grayscale=False)
    back, names = read_reconstructions(tmp_path / "wgan_gp_HVC.h5")
    assert names == ["a", "b", "c", "d"] and np.array_equal(back, images)
    png = np.asarray(Image.open(tmp_path / "wgan_gp_HVC" / "c.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.abs(png - images[2]).max() <= 0.5 / 255 + 1e-6
    gray = np.repeat(images[:, :1], 3, axis=1)
    save_reconstructions(tmp_path, "g", gray, ["a", "b", "c", "d"], grayscale=True)
    assert read_reconstructions(tmp_path / "g.h5")[0].shape == (4, 1, 16, 16)
    assert Image.open(tmp_path / "g" / "a.png").mode == "L"
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


# ------------------------------------------------------------------ end to end, by command line

def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _experiment(root: Path, **generator) -> Path:
    """The tiny experiment with paths relative to ``root`` (so two roots give identical metrics)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {**TINY, "data": {**TINY["data"], "root": "data"}, "work_dir": "work", "results_dir": "results",
           "generator": {**TINY["generator"], "iterations": 3, "tick_every": 3, **generator}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return root / "tiny.yaml"


def test_same_seed_same_metrics_and_torchrun_matches_one_process(tmp_path):
    metrics = {}
    for name in ("a", "b"):
        cfg = _experiment(tmp_path / name)
        _run(cfg.parent, "-m", "stage1_decode", "run", "--config", "tiny.yaml")
        _run(cfg.parent, "-m", "stage2_generate", "run", "--config", "tiny.yaml")
        metrics[name] = (cfg.parent / "results/tiny/metrics.json").read_text()
    assert metrics["a"] == metrics["b"]  # the same machine and seed: the same metrics.json

    # saved reconstructions re-score to the reported PixCorr: exactly from HDF5, closely from PNG
    reported = json.loads(metrics["a"])["reconstruction"]["sub-01"]
    folder = tmp_path / "a/results/tiny/reconstructions/sub-01/VC/natural"
    true, true_names = read_reconstructions(folder / "wgan_gp.h5")  # names of the test images
    from shared.config import load_config as load
    from shared.datasets import load_images

    cfg_a = load(tmp_path / "a/tiny.yaml")
    truth = load_images(tmp_path / "a/data/images/test", true_names, cfg_a.generator.image_size)
    for method in ("wgan_gp", "pixel_ridge", "nearest_train"):
        recon, names = read_reconstructions(folder / f"{method}.h5")
        assert names == true_names
        assert M.summarise(np.diag(M.corr_matrix(recon, truth))) == reported[method]["pixcorr"]
        png = np.stack([np.asarray(Image.open(folder / method / f"{n}.png"), dtype=np.float32).transpose(2, 0, 1)
                        for n in names]) / 255
        assert abs(M.summarise(np.diag(M.corr_matrix(png, truth))) - reported[method]["pixcorr"]) <= 0.005

    # two torchrun processes, each on half of every global batch, train the same generator
    c = tmp_path / "c"
    cfg = _experiment(c)
    shutil.copytree(tmp_path / "a/data", c / "data")
    shutil.copytree(tmp_path / "a/work/tiny/features", c / "work/tiny/features")
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _run(c, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "stage2_generate", "run", "--config", "tiny.yaml")
    from shared import checkpoints

    one = checkpoints.load(next((tmp_path / "a/work/tiny/generator").glob("*/generator.pt")))
    two = checkpoints.load(next((c / "work/tiny/generator").glob("*/generator.pt")))
    assert one["key"] == two["key"]
    for k in one["generator"]:
        torch.testing.assert_close(two["generator"][k], one["generator"][k], atol=1e-5, rtol=1e-4)
    got = json.loads((c / "results/tiny/metrics.json").read_text())["reconstruction"]["sub-01"]["wgan_gp"]
    assert got["pixcorr"] == pytest.approx(reported["wgan_gp"]["pixcorr"], abs=1e-4)


def test_grayscale_stimuli_give_grayscale_reconstructions(tmp_path):
    _experiment(tmp_path, train_inputs="corrupted")
    _run(tmp_path, "-m", "stage1_decode", "simulate", "--config", "tiny.yaml")
    for png in (tmp_path / "data/images").rglob("*.png"):
        Image.open(png).convert("L").save(png)
    _run(tmp_path, "-m", "stage1_decode", "run", "--config", "tiny.yaml", "--set", "decoder.train_oof=false",
         "--set", "eval.validation_fraction=0")
    _run(tmp_path, "-m", "stage2_generate", "run", "--config", "tiny.yaml", "--set", "decoder.train_oof=false",
         "--set", "eval.validation_fraction=0")
    results = tmp_path / "results/tiny"
    assert json.loads((results / "metrics.json").read_text())["reconstruction_info"]["grayscale"] is True
    folder = results / "reconstructions/sub-01/VC/natural"
    for method in ("wgan_gp", "pixel_ridge", "nearest_train"):
        assert read_reconstructions(folder / f"{method}.h5")[0].shape[1] == 1
        assert {Image.open(p).mode for p in (folder / method).glob("*.png")} == {"L"}
