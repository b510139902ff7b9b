"""Losses of the generator and the critic (WGAN-GP; Gulrajani et al. 2017).

Every loss is a mean over samples of a per-sample term, so data-parallel training
(gradients averaged over processes of equal share) equals one process on the global
batch.

* ``gradient_penalty``: lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates
  x_hat = eps * real + (1 - eps) * fake, with the norm per sample and
  ``create_graph=True`` so the penalty is differentiated in the critic's update.
* ``critic_loss``: -(E[D(real)] - E[D(fake)]) + gradient penalty.
* ``perceptual_loss``: squared error between perceptual-network features of the
  reconstruction and of the true image, per sample and layer normalised by the true
  features' power.
* ``pixel_loss``: squared error in pixels over the true image's variance, per sample
  (1 for a flat image at the true mean), so its weight is on the others' scale.
* ``feature_matching_loss``: the same normalised error between the critic's last
  hidden features of the reconstruction and of its true image.
* ``feature_consistency_loss``: 1 - Pearson r per sample between the feature
  network's (transformed) features of the reconstruction and the features it was
  conditioned on (scale-free, since decoded inputs are rescaled).
"""

from __future__ import annotations

import torch
from torch import nn


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, lambda_gp: float = 10.0,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)  # in float32 also under bf16 autocast
    return lambda_gp * ((norms - 1) ** 2).mean()


class CriticLoss(nn.Module):
    """The critic's whole objective in one ``forward`` (so DDP can wrap it):
    returns ``(loss, wasserstein estimate, gradient penalty)``."""

    def __init__(self, critic: nn.Module, lambda_gp: float):
        super().__init__()
        self.critic = critic
        self.lambda_gp = lambda_gp

    def forward(self, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor):
        w_dist = self.critic(real).mean() - self.critic(fake).mean()
        gp = gradient_penalty(self.critic, real, fake, self.lambda_gp, eps=eps)
        return gp - w_dist, w_dist, gp


def normalised_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``|a_i - b_i|^2 / |b_i|^2`` (``b`` is the target)."""
    b = b.detach()
    err = ((a - b) ** 2).flatten(1).mean(1)
    power = (b**2).flatten(1).mean(1).clamp_min(1e-8)
    return (err / power).mean()


def perceptual_loss(recon_feats: dict[str, torch.Tensor], true_feats: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(normalised_mse(recon_feats[k], true_feats[k]) for k in true_feats) / len(true_feats)


def pixel_loss(recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per sample, squared error over the true image's variance (scale-free like the others)."""
    err = ((recon - true) ** 2).flatten(1).mean(1)
    var = true.flatten(1).var(1, unbiased=False).clamp_min(1e-4)
    return (err / var).mean()


def feature_matching_loss(critic: nn.Module, recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target = critic.features(true)
    return normalised_mse(critic.features(recon), target)


def feature_consistency_loss(recon_feats: list[torch.Tensor], conditioning: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers and samples of 1 - r(features of the reconstruction, conditioning input)."""
    total = 0.0
    for a, b in zip(recon_feats, conditioning):
        a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
        b = b.detach().flatten(1) - b.detach().flatten(1).mean(1, keepdim=True)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)
        total = total + (1 - r).mean()
    return total / len(recon_feats)
