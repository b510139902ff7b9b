"""Losses of the generator and the critic (WGAN-GP; Gulrajani et al. 2017).

* ``gradient_penalty``: lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates
  x_hat = eps * real + (1 - eps) * fake, with the norm per sample and
  ``create_graph=True`` so the penalty is differentiated in the critic's update.
* ``perceptual_loss``: squared error between comparator-network features of the
  reconstruction and the true image, each layer normalised by the true features' power.
* ``pixel_loss``: mean squared error in pixels.
* ``feature_matching_loss``: squared error between the critic's last hidden features
  of the reconstruction and of its true image (normalised likewise).
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
    norms = grad.flatten(1).norm(2, dim=1)
    return lambda_gp * ((norms - 1) ** 2).mean()


def _normalised_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean() / (b.detach() ** 2).mean().clamp_min(1e-8)


def perceptual_loss(comparator: nn.Module, recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    fr, ft = comparator(recon), comparator(true)
    return sum(_normalised_mse(fr[k], ft[k].detach()) for k in ft) / len(ft)


def pixel_loss(recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return ((recon - true) ** 2).mean()


def feature_matching_loss(critic: nn.Module, recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return _normalised_mse(critic.features(recon), critic.features(true).detach())
