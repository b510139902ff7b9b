"""The image coders' networks and losses (``_image_coder.py`` trains them): an encoder that mirrors the critic, a
decoder that is this project's generator with one vector input (its output starts at the training images' mean image
and is clamped to [0, 1] only in evaluation mode), the VAE's bound, the autoencoder's pixel and perceptual losses,
and images through a coder (latent means, decodings, raw autoencodings)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shared.config import Config
from stage2_generate.losses import pixel_loss
from stage2_generate.models import Generator, generate, strided_body
from stage2_generate.train import raw_outputs

AUTOENCODER = "autoencoder"  # the plain coder's kind; any other kind is variational


def is_variational(kind: str) -> bool:
    return kind != AUTOENCODER


class Encoder(nn.Module):
    """``forward(images (B, 3, S, S)) -> (B, out)``: the critic's strided convolutions (while the side is
    at least 8), then a linear map."""

    def __init__(self, image_size: int, base: int, out: int):
        super().__init__()
        layers, ch, side = strided_body(image_size, base)
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(ch * side * side, out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


class ImageCoder(nn.Module):
    """An encoder and a decoder of images; ``variational`` makes it a VAE (the encoder gives means
    and log-variances). ``mean_image``: the training images' mean image, the untrained decoder's
    output (see ``models.Generator``)."""

    def __init__(self, image_size: int, base: int, latent: int, channels: int, variational: bool,
                 mean_image: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        self.latent, self.variational = latent, variational
        self.encoder = Encoder(image_size, base, 2 * latent if variational else latent)
        self.decoder = Generator([(latent,)], image_size, base, channels, mean_image=mean_image)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean, log-variance)`` of the latent code (log-variance None for an autoencoder)."""
        h = self.encoder(images)
        return (h[:, :self.latent], h[:, self.latent:].clamp(-10, 10)) if self.variational else (h, None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder([z])


def vae_loss(recon: torch.Tensor, images: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image means of (squared error summed over pixels, KL divergence from N(0, I))."""
    err = ((recon - images) ** 2).flatten(1).sum(1).mean()
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1).mean()
    return err, beta * kl


def perceptual_losses(cfg: Config, device):
    """The generator's perceptual loss network alone (no feature consistency), or None when it is off."""
    from stage2_generate.losses import LossNetworks

    if cfg.generator.loss_perceptual <= 0:
        return None
    return LossNetworks(cfg.generator, cfg.features, []).to(device).eval()  # no conditioning layers: no consistency


def autoencoder_loss(cfg: Config, percep, recon: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generator's pixel and perceptual losses, weighted as it weights them (``percep``: from
    ``perceptual_losses``); what the autoencoder and the latent map are trained on."""
    g = cfg.generator
    out = {"pixel": g.loss_pixel * pixel_loss(recon, real)}
    if percep is not None:
        out["perceptual"] = g.loss_perceptual * percep.losses(recon, real, [])["perceptual"]
    return out


def coder_losses(cfg: Config, kind: str, coder: ImageCoder, percep, real: torch.Tensor, gen: torch.Generator | None
            ) -> dict[str, torch.Tensor]:
    """The coder's training losses on the images ``real``; a VAE draws its latent sample with ``gen`` (None: the
    posterior means, no draw)."""
    mean, logvar = coder.encode(real)
    if not is_variational(kind):
        return autoencoder_loss(cfg, percep, coder.decode(mean), real)
    z = mean if gen is None else mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen).to(real.device)
    err, kl = vae_loss(coder.decode(z), real, mean, logvar, cfg.methods.vae_beta)
    return {"pixel_sum": err, "kl": kl}


def raw_autoencode(coder: ImageCoder, images: np.ndarray, device) -> np.ndarray:
    """``images`` ``(n, 3, S, S)`` through the coder: decoded from their latent codes (a VAE's posterior means),
    before the clamp to [0, 1] that evaluation applies (``train.raw_outputs``: what ``watch.Health`` judges;
    clamped, they are the reconstructions)."""
    return raw_outputs(coder.decoder, [encode_means(coder, images, device)], device)


def encode_means(coder: ImageCoder, images: np.ndarray, device, batch: int = 64) -> np.ndarray:
    """Latent codes (a VAE's posterior means) of ``images``, ``(n, latent)``."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out.append(coder.encode(torch.from_numpy(images[s:s + batch]).to(device))[0].float().cpu().numpy())
    return np.concatenate(out)


def decode(coder: ImageCoder, z: np.ndarray, device) -> np.ndarray:
    """Images ``(n, 3, S, S)`` of latent codes ``z``."""
    return generate(coder.decoder, [z], device)
