"""The generator's and critic's networks at native resolution (any image size from 8 to 512) and
the generator's output parameterisation (mean image + skips, no saturating squash)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shared.config import load_config
from shared.errors import UserError
from stage2_generate.conditioning import LayerTransform, entry_size
from stage2_generate.losses import pixel_loss
from stage2_generate.models import Critic, Generator, block_sizes, generate

SIZES = [10, 28, 32, 64]


def _randomise_to_image(G: Generator, std: float = 1.0, seed: int = 0) -> None:
    """Give the (zero-initialised) 1x1 image convolutions non-zero weights, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in G.to_image:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * std)


def test_block_sizes_halve_rounding_up_down_to_four():
    assert block_sizes(64) == [4, 8, 16, 32, 64]
    assert block_sizes(28) == [4, 7, 14, 28]
    assert block_sizes(10) == [5, 10]
    assert block_sizes(8) == [4, 8]
    assert block_sizes(512) == [4, 8, 16, 32, 64, 128, 256, 512]
    for s in range(8, 513):
        sizes = block_sizes(s)
        assert sizes[-1] == s and sizes[0] >= 4 and (sizes[0] + 1) // 2 < 4
        assert all(b == (a + 1) // 2 for a, b in zip(sizes[::-1], sizes[::-1][1:]))


def test_power_of_two_conditioning_is_unchanged():
    """For power-of-two images a map enters the largest power of two not above its side nor the image
    size, and maps under 4 x 4 keep their side (the transforms of before native resolution)."""
    def before(height, image_size):
        return height if height < 4 else min(1 << (height.bit_length() - 1), image_size)

    for size in (8, 16, 32, 64, 128, 256, 512):
        assert [entry_size(h, size) for h in range(1, 600)] == [before(h, size) for h in range(1, 600)]


@pytest.mark.parametrize("size", SIZES)
def test_generator_and_critic_shapes_at_any_size(size):
    shapes = [(6, 2, 2), (5, 4, 4), (4, 7, 7), (3, 16, 16), (3, size, size), (3, 2 * size, 2 * size), (9,)]
    torch.manual_seed(0)
    G = Generator(shapes, image_size=size, base=4)
    assert G.sizes == block_sizes(size)  # the fc vector starts the generator at the smallest block
    assert set(G.entry) <= set(G.sizes)  # every map enters a block (none is silently dropped)
    for shape, at in zip(shapes, G.entry):
        if len(shape) == 3:
            below = [s for s in G.sizes if s <= shape[1]]
            assert at == (max(below) if below else G.sizes[0])
    x = [torch.randn(2, *s) for s in shapes]
    img = G(x)
    assert img.shape == (2, 3, size, size)
    D = Critic(size, base=4)
    assert D(img).shape == (2,)
    assert D.features(img).shape[-1] == D.features(img).shape[-2] >= 4
    # grayscale, and a generator of conv maps alone (it starts at its coarsest map's block)
    gray = Generator(shapes[:-1], image_size=size, base=4, channels=1)
    out = gray(x[:-1])
    assert out.shape == (2, 3, size, size) and torch.equal(out[:, 0], out[:, 2])
    only = Generator([(3, size, size)], image_size=size, base=4)
    assert only.sizes == [size] and only([torch.randn(1, 3, size, size)]).shape == (1, 3, size, size)


def test_critic_layers_at_powers_of_two_and_native_sizes():
    def convs(D):
        return [m for m in D.body if isinstance(m, torch.nn.Conv2d)]

    for size in (32, 64, 128):  # strided convolutions down to 4 x 4, then the linear head (as always)
        D = Critic(size, base=8)
        assert len(convs(D)) == int(np.log2(size // 4)) and D.head.in_features == convs(D)[-1].out_channels * 16
    assert [len(convs(Critic(s, base=8))) for s in (10, 28)] == [1, 2]  # 10 -> 5; 28 -> 14 -> 7
    assert Critic(28, base=8).head.in_features == 16 * 7 * 7
    assert Critic(10, base=8).head.in_features == 8 * 5 * 5


@pytest.mark.parametrize("channels", [3, 1])
def test_an_untrained_generator_outputs_the_mean_image_exactly(channels, rng):
    size = 28
    mean = rng.uniform(0.1, 0.9, size=(3, size, size)).astype(np.float32)
    G = Generator([(4, 7, 7), (6,)], image_size=size, base=4, channels=channels, mean_image=mean).train()
    out = G([torch.randn(3, 4, 7, 7), torch.randn(3, 6)])
    want = torch.from_numpy(mean if channels == 3 else np.repeat(mean.mean(0, keepdims=True), 3, axis=0))
    assert torch.equal(out, want.expand(3, -1, -1, -1))
    assert all(not conv.weight.any() and not conv.bias.any() for conv in G.to_image)
    # None: 0.5 everywhere; the mean is a buffer, saved with the weights
    plain = Generator([(6,)], image_size=10, base=4)
    assert torch.equal(plain([torch.randn(2, 6)]), torch.full((2, 3, 10, 10), 0.5))
    assert "mean_image" in G.state_dict()
    with pytest.raises(ValueError, match="mean_image"):
        Generator([(6,)], image_size=10, base=4, mean_image=np.zeros((3, 12, 12)))


def test_the_pixel_loss_keeps_a_gradient_far_outside_the_image_range():
    """Where a sigmoid output would saturate (all black), the pixel loss still moves the output."""
    torch.manual_seed(0)
    G = Generator([(4, 4, 4), (6,)], image_size=10, base=4, channels=1).train()
    G.mean_image.fill_(-5.0)
    target = (torch.rand(4, 3, 10, 10) > 0.8).float()  # thin white strokes on black
    target = target[:, :1].expand(-1, 3, -1, -1)
    out = G([torch.randn(4, 4, 4, 4), torch.randn(4, 6)])
    assert out.max() < -4  # far below black
    pixel_loss(out, target).backward()
    for conv in G.to_image:
        assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0
        assert float(conv.bias.grad.abs().sum()) > 0


def test_eval_mode_and_generate_clamp_to_the_image_range():
    torch.manual_seed(0)
    G = Generator([(4, 7, 7), (6,)], image_size=28, base=4)
    _randomise_to_image(G, std=3.0)
    x = [torch.randn(5, 4, 7, 7), torch.randn(5, 6)]
    raw = G.train()(x)
    assert raw.min() < 0 and raw.max() > 1  # training sees the unclamped image
    clamped = G.eval()(x)
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert torch.equal(clamped, raw.clamp(0, 1))
    G.train()  # generate() clamps whatever the mode
    out = generate(G, [v.numpy() for v in x], "cpu", batch=2)
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, clamped.detach().numpy(), atol=1e-6)


def test_conditioning_transforms_agree_with_the_generator_at_28_px():
    size = 28
    shapes = [(3, 2, 2), (3, 3, 3), (3, 4, 4), (3, 6, 6), (3, 7, 7), (3, 13, 13), (3, 14, 14), (3, 27, 27),
              (3, 28, 28), (3, 56, 56), (3, 112, 112), (10,)]
    tfs = [LayerTransform(f"l{i}", s, np.zeros(int(np.prod(s)), np.float32), np.ones(int(np.prod(s)), np.float32),
                          size) for i, s in enumerate(shapes)]
    assert [tf.out_shape[1] for tf in tfs[:-1]] == [2, 3, 4, 4, 7, 7, 14, 14, 28, 28, 28]
    assert tfs[-1].out_shape == (10,)
    G = Generator([tf.out_shape for tf in tfs], image_size=size, base=4)
    for tf, at in zip(tfs, G.entry):
        if tf.is_conv:
            side = tf.out_shape[1]
            assert side == at or (side < G.sizes[0] and at == G.sizes[0])  # small maps are upsampled to 4
    # transformed maps need no pooling in the generator: they come at their block's side already
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in G.modules())
    x = [tf.apply_torch(torch.randn(2, *tf.unit_shape)) for tf in tfs]
    assert [tuple(v.shape[1:]) for v in x] == [tf.out_shape for tf in tfs]
    assert G(x).shape == (2, 3, size, size)


@pytest.mark.parametrize("size", [10, 28])
def test_image_coder_at_native_sizes(size, rng):
    from stage2_generate.methods._coder_nets import ImageCoder

    images = rng.uniform(size=(4, 3, size, size)).astype(np.float32)
    coder = ImageCoder(size, 4, 5, 1, variational=True, mean_image=images.mean(axis=0))
    mean, logvar = coder.encode(torch.from_numpy(images))
    assert mean.shape == (4, 5) and logvar.shape == (4, 5)
    out = coder.train().decode(mean)
    assert out.shape == (4, 3, size, size)
    torch.testing.assert_close(out[0, 0], torch.from_numpy(images.mean(axis=(0, 1))))  # gray mean, untrained


def test_pixel_ridge_never_fits_above_the_image_size():
    from stage2_generate.methods.pixel_ridge import candidate_sizes, pixel_ridge

    fitted = {}

    class FakeRidge:  # records the targets' width; predicts the targets' mean; no folds to choose with
        def fit(self, Y, extend=False):
            fitted["width"] = Y.shape[1]
            return SimpleNamespace(alpha=1.0, alpha_cv={}, alpha_limit=None, predict=lambda X: np.tile(Y.mean(0), (len(X), 1)),
                                   out_of_fold=lambda: None)

    images = np.random.default_rng(0).uniform(size=(6, 3, 10, 10)).astype(np.float32)
    out, record = pixel_ridge(FakeRidge(), images, {"natural": np.zeros((2, 7))}, sizes=[32])
    assert fitted["width"] == 3 * 10 * 10 and out["natural"].shape == (2, 3, 10, 10) and record["size"] == 10
    np.testing.assert_allclose(out["natural"][0], images.mean(0), atol=1e-6)  # at 10 px nothing is resampled
    pixel_ridge(FakeRidge(), images, {"natural": np.zeros((2, 7))}, sizes=[4])
    assert fitted["width"] == 3 * 4 * 4
    assert candidate_sizes(64) == [8, 16, 32, 64] and candidate_sizes(10) == [5, 10]
    assert candidate_sizes(28) == [7, 14, 28] and candidate_sizes(64, [16, 128]) == [16, 64]


def test_config_accepts_any_image_size_from_8_to_512(tiny_config):
    assert load_config(tiny_config, ["generator.image_size=28"]).generator.image_size == 28
    assert load_config(tiny_config, ["generator.image_size=10"]).generator.image_size == 10
    for bad in (7, 513):
        with pytest.raises(UserError, match=rf"'generator.image_size' must lie in \[8, 512\]; {bad} was given"):
            load_config(tiny_config, [f"generator.image_size={bad}"])
    with pytest.raises(UserError, match=r"'eval.pixel_ridge_sizes' must all be at least 1 px .*; \[16, 0\] was given"):
        load_config(tiny_config, ["eval.pixel_ridge_sizes=[16,0]"])
