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
* ``ssim_loss``: 1 - SSIM per sample, on luminance with the Gaussian window of ``shared.metrics.ssim`` (the
  score of the same name), so a set whose structure the pixel loss blurs away can be trained on it.
* ``feature_consistency_loss``: 1 - Pearson r per sample between the feature
  network's (transformed) features of the reconstruction and the features it was
  conditioned on (scale-free, since decoded inputs are rescaled).

``LossNetworks`` holds the fixed networks the perceptual and feature-consistency losses look
through; ``generator_losses`` gives every switched-on loss of one generator step.
"""

from __future__ import annotations

import torch
from torch import nn

from shared import metrics as M
from shared.config import FeaturesConfig, GeneratorConfig, resolve_perceptual_weights
from shared.featnet import FeatureNet
from stage2_generate.conditioning import LayerTransform

LOSSES = ("adversarial", "pixel", "perceptual", "feature_matching", "feature_consistency", "ssim")


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


def ssim_loss(recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over samples of 1 - SSIM of ``(n, C, H, W)`` images (C 1 or 3, intensities in 0-1): the luminance,
    window and constants of ``shared.metrics.ssim``, in torch so that it has a gradient."""
    with torch.autocast(recon.device.type, enabled=False):  # float32 even under bf16: E[x^2] - mx^2 needs it
        return _ssim_loss(recon.float(), true.detach().float())


def _ssim_loss(recon: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    lum = recon.new_tensor(M.LUMINANCE).reshape(1, 3, 1, 1)
    x, y = ((a * lum).sum(1, keepdim=True) if a.shape[1] == 3 else a for a in (recon, true))
    g = recon.new_tensor(M.ssim_window(*x.shape[-2:]))

    def blur(a: torch.Tensor) -> torch.Tensor:  # separable 'valid' filtering, as metrics._filter2
        a = torch.nn.functional.conv2d(a, g.reshape(1, 1, 1, -1))
        return torch.nn.functional.conv2d(a, g.reshape(1, 1, -1, 1))

    c1, c2 = M.SSIM_C1, M.SSIM_C2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return (1 - s.flatten(1).mean(1)).mean()


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


class LossNetworks(torch.nn.Module):
    """The fixed networks the generator's losses look through: the perceptual network and
    the feature network (feature consistency), one forward pass when they are the same."""

    def __init__(self, g: GeneratorConfig, f: FeaturesConfig, transforms: list[LayerTransform]):
        """``g``, ``f``: the generator and feature sections; ``transforms``: the conditioning layers' (none:
        no feature consistency, e.g. for a generator from voxels or an image coder)."""
        super().__init__()
        self.percep_layers = list(g.perceptual_layers) if g.loss_perceptual > 0 else []
        names = g.consistency_layers or g.condition_layers
        self.consist = [tf for tf in transforms if tf.layer in names] if g.loss_feature_consistency > 0 else []
        consist_layers = [tf.layer for tf in self.consist]
        perceptual = resolve_perceptual_weights(g, f)
        pixel_channels = next((tf.unit_shape[0] for tf in self.consist if tf.is_pixels), 3)  # as stage 1 stored them
        same = g.perceptual_network == f.network and perceptual == f.weights
        self.shared = same and bool(self.percep_layers) and bool(consist_layers)
        self.percep = self.featnet = None
        if self.shared:
            self.percep = FeatureNet(f.network, f.weights, sorted(set(self.percep_layers) | set(consist_layers)),
                                     input_size=f.input_size, pixel_channels=pixel_channels)
        else:
            if self.percep_layers:
                size = f.input_size if g.perceptual_network == f.network else max(g.image_size, 64)
                self.percep = FeatureNet(g.perceptual_network, perceptual, self.percep_layers,
                                         input_size=size)
            if consist_layers:
                self.featnet = FeatureNet(f.network, f.weights, consist_layers, input_size=f.input_size,
                                          pixel_channels=pixel_channels)
        self.consist_index = [[tf.layer for tf in transforms].index(tf.layer) for tf in self.consist]

    def losses(self, fake: torch.Tensor, real: torch.Tensor, cond: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        fake_feats = self.percep(fake) if self.percep is not None else {}
        if self.percep_layers:
            with torch.no_grad():
                real_feats = self.percep(real)
            out["perceptual"] = perceptual_loss({k: fake_feats[k] for k in self.percep_layers},
                                                {k: real_feats[k] for k in self.percep_layers})
        if self.consist:
            feats = fake_feats if self.shared else self.featnet(fake)
            out["feature_consistency"] = feature_consistency_loss(
                [tf.apply_torch(feats[tf.layer]) for tf in self.consist], [cond[i] for i in self.consist_index])
        return out


def loss_weights(g: GeneratorConfig) -> dict[str, float]:
    """``{loss name: weight}`` of the generator's losses (0 = off); ``g``: the generator section."""
    return {name: getattr(g, f"loss_{name}") for name in LOSSES}


def uses_critic(weights: dict[str, float]) -> bool:
    """Whether any switched-on loss looks through the critic (else it is not trained)."""
    return weights["adversarial"] > 0 or weights["feature_matching"] > 0


def generator_losses(weights: dict[str, float], D: nn.Module, nets: LossNetworks, fake: torch.Tensor,
                     real: torch.Tensor, cond: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every switched-on loss of one generator step (unweighted)."""
    losses = {"pixel": pixel_loss(fake, real)} if weights["pixel"] else {}
    if weights["ssim"]:
        losses["ssim"] = ssim_loss(fake, real)
    if weights["adversarial"]:
        losses["adversarial"] = -D(fake).mean()
    if weights["feature_matching"]:
        losses["feature_matching"] = feature_matching_loss(D, fake, real)
    losses.update(nets.losses(fake, real, cond))
    return losses
