"""Generator and critic networks.

The generator maps conditioning features (conv layers pooled to ``(C, 8, 8)``, fc
layers as vectors) to an RGB image in [0, 1]; it is deterministic (no latent noise):
one reconstruction per brain sample. The critic follows WGAN-GP practice: no batch
normalisation (the gradient penalty is per sample), LeakyReLU, strided convolutions.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Generator(nn.Module):
    """``forward(inputs: list of (B, *shape_i)) -> (B, 3, image_size, image_size)``."""

    def __init__(self, input_shapes: list[tuple[int, ...]], image_size: int = 64, base: int = 64, grid: int = 8):
        super().__init__()
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.image_size = image_size
        self.grid = grid
        width = 4 * base
        self.embed = nn.ModuleList()
        for shape in self.input_shapes:
            if len(shape) == 3:  # conv map, already pooled to <= grid x grid
                self.embed.append(nn.Sequential(nn.Upsample(size=(grid, grid), mode="nearest"),
                                                nn.Conv2d(shape[0], width, 1), nn.LeakyReLU(0.2)))
            else:
                self.embed.append(nn.Sequential(nn.Linear(shape[0], width * grid * grid // 4), nn.LeakyReLU(0.2),
                                                nn.Unflatten(1, (width // 4, grid, grid)),
                                                nn.Conv2d(width // 4, width, 1), nn.LeakyReLU(0.2)))
        self.mix = nn.Sequential(nn.Conv2d(width * len(input_shapes), width, 3, padding=1), nn.BatchNorm2d(width),
                                 nn.LeakyReLU(0.2))
        blocks = []
        ch = width
        for _ in range(int(math.log2(image_size // grid))):
            out = max(base // 2, ch // 2)
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2),
                       nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        self.up = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        assert len(inputs) == len(self.input_shapes), "one input per conditioning layer"
        for x, shape in zip(inputs, self.input_shapes):
            assert tuple(x.shape[1:]) == shape, f"conditioning input {tuple(x.shape[1:])} != {shape}"
        h = torch.cat([emb(x) for emb, x in zip(self.embed, inputs)], dim=1)
        img = torch.sigmoid(self.to_rgb(self.up(self.mix(h))))
        assert img.shape[-1] == self.image_size
        return img


class Critic(nn.Module):
    """``forward(images (B, 3, S, S)) -> (B,)`` scores; ``features`` gives the last hidden map."""

    def __init__(self, image_size: int = 64, base: int = 64):
        super().__init__()
        layers, ch = [], 3
        n_down = int(math.log2(image_size // 4))
        for i in range(n_down):
            out = min(base * 2**i, 8 * base)
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch * 4 * 4, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images).flatten(1)).squeeze(1)
