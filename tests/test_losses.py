import numpy as np
import pytest
import torch

from shared import metrics as M
from stage2_generate.losses import LOSSES, gradient_penalty, generator_losses, ssim_loss
from stage2_generate.models import Critic, Generator


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so GP = lambda * (|w| - 1)^2."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1)


def test_gradient_penalty_of_linear_critic_is_known():
    w = torch.zeros(3, 4, 4)
    w[0, 0, 0], w[1, 2, 3] = 3.0, 4.0  # |w| = 5
    critic = LinearCritic(w)
    real, fake = torch.rand(6, 3, 4, 4), torch.rand(6, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake, lambda_gp=10.0)
    assert torch.isclose(gp, torch.tensor(160.0))  # 10 * (5 - 1)^2
    gp.backward()  # create_graph=True: the penalty is differentiable in the critic's weights
    # d/dw of 10 * (|w| - 1)^2 = 20 * (|w| - 1) * w / |w| = 16 * w
    torch.testing.assert_close(critic.w.grad, 16 * w)


def test_gradient_penalty_is_per_sample():
    """A quadratic critic has different gradient norms per sample; the mean of per-sample
    penalties differs from the penalty of the batch-mean gradient norm."""

    class Quad(torch.nn.Module):
        def forward(self, x):
            return (x.flatten(1) ** 2).sum(1)

    real = torch.stack([torch.full((1, 1, 1), 1.0), torch.full((1, 1, 1), 3.0)])
    eps = torch.ones(2, 1, 1, 1)  # interpolates = real
    gp = gradient_penalty(Quad(), real, torch.zeros_like(real), 1.0, eps=eps)
    # gradients 2 and 6 -> ((2-1)^2 + (6-1)^2) / 2 = 13
    assert torch.isclose(gp, torch.tensor(13.0))


def test_networks_shapes_and_critic_has_no_batchnorm():
    G = Generator([(16, 4, 4), (10,)], image_size=32, base=8)
    img = G([torch.randn(2, 16, 4, 4), torch.randn(2, 10)])
    assert img.shape == (2, 3, 32, 32) and img.min() >= 0 and img.max() <= 1
    D = Critic(32, base=8)
    assert D(img).shape == (2,)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 20), (3, 10), (1, 9)])
def test_ssim_loss_is_one_minus_the_scored_ssim(channels, size):
    """The training loss is the evaluation's SSIM (luminance, window, constants), per sample, at every size the
    presets use, in colour and grey; a grey image scores as its three repeated channels do."""
    rng = np.random.default_rng(size)
    true = rng.random((4, channels, size, size)).astype(np.float32)
    recon = np.clip(true + rng.normal(0, 0.2, true.shape), 0, 1).astype(np.float32)
    as_rgb = (lambda a: np.repeat(a, 3, axis=1)) if channels == 1 else (lambda a: a)
    want = 1 - M.ssim(as_rgb(recon), as_rgb(true)).mean()
    got = ssim_loss(torch.from_numpy(recon), torch.from_numpy(true)).item()
    assert got == pytest.approx(want, abs=1e-5)
    assert ssim_loss(torch.from_numpy(true), torch.from_numpy(true)).item() == pytest.approx(0, abs=1e-6)


def test_ssim_loss_descends_towards_the_true_image():
    """Its gradient reaches the image: steps on a noisy image raise the scored SSIM."""
    rng = np.random.default_rng(0)
    true = torch.from_numpy((rng.random((2, 1, 16, 16)) > 0.7).astype(np.float32))
    x = (0.5 + 0.1 * torch.randn_like(true)).requires_grad_(True)
    before = M.ssim(np.repeat(x.detach().numpy(), 3, 1), np.repeat(true.numpy(), 3, 1)).mean()
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        ssim_loss(x, true).backward()
        opt.step()
    after = M.ssim(np.repeat(x.detach().clamp(0, 1).numpy(), 3, 1), np.repeat(true.numpy(), 3, 1)).mean()
    assert after > before + 0.3, (before, after)


def test_a_generator_step_takes_the_ssim_loss_when_it_is_on():
    """``generator_losses`` gives the SSIM loss exactly when its weight is on (here alone), as ``ssim_loss`` computes it;
    on rectangular images too."""
    rng = np.random.default_rng(1)
    fake, real = (torch.from_numpy(rng.random((3, 1, 12, 20)).astype(np.float32)) for _ in range(2))

    class NoNets:
        def losses(self, *args):
            return {}

    weights = {name: 0.0 for name in LOSSES}
    assert generator_losses(weights, None, NoNets(), fake, real, []) == {}
    losses = generator_losses({**weights, "ssim": 1.0}, None, NoNets(), fake, real, [])
    assert set(losses) == {"ssim"} and losses["ssim"].item() == pytest.approx(ssim_loss(fake, real).item())
    want = 1 - M.ssim(np.repeat(fake.numpy(), 3, 1), np.repeat(real.numpy(), 3, 1)).mean()
    assert losses["ssim"].item() == pytest.approx(want, abs=1e-5)
