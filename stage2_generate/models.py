"""Generator and critic networks.

The generator maps conditioning features to an image in [0, 1]; it is deterministic
(no latent noise): one reconstruction per brain sample. Conditioning enters at every
resolution: fc vectors through a learned projection at the first block, each conv map
(already pooled to a power-of-two side by ``conditioning.entry_size``) at the block of
its own size, so low layers can carry detail. Every block also writes an image
(StyleGAN2's "skip" generator): the output is the sum of all blocks' images, each
upsampled, so coarse blocks reach the pixels directly. The generator has no batch statistics
(no batch normalisation), so data-parallel training over several processes computes
exactly what one process computes on the same global batch. A grayscale generator
(``channels=1``) repeats its one channel to RGB for every network that looks at it.

The critic follows WGAN-GP practice: no batch normalisation (the gradient penalty is
per sample), LeakyReLU, strided convolutions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def block_channels(size: int, base: int) -> int:
    """Channels of the generator block at ``size x size``: wide at coarse blocks, narrow at fine ones."""
    return max(base // 2, min(4 * base, 32 * base // size))


def _conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2))


class Generator(nn.Module):
    """``forward(inputs: list of (B, *shape_i)) -> (B, 3, image_size, image_size)``."""

    def __init__(self, input_shapes: list[tuple[int, ...]], image_size: int = 64, base: int = 64, channels: int = 3):
        super().__init__()
        assert channels in (1, 3)
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.image_size = image_size
        self.channels = channels
        spatial = [max(4, s[1]) for s in self.input_shapes if len(s) == 3]
        has_vector = any(len(s) == 1 for s in self.input_shapes)
        self.start = 4 if has_vector or not spatial else min(spatial)
        assert self.start <= image_size, "a conditioning map is larger than the image"
        self.entry = [max(4, s[1]) if len(s) == 3 else self.start for s in self.input_shapes]
        self.embed = nn.ModuleList()
        for shape, size in zip(self.input_shapes, self.entry):
            ch = block_channels(size, base)
            if len(shape) == 3:
                up = [nn.Upsample(size=(size, size), mode="nearest")] if shape[1] < size else []
                self.embed.append(nn.Sequential(*up, nn.Conv2d(shape[0], ch, 1), nn.LeakyReLU(0.2)))
            else:
                self.embed.append(nn.Sequential(nn.Linear(shape[0], ch * size * size), nn.LeakyReLU(0.2),
                                                nn.Unflatten(1, (ch, size, size))))
        self.sizes = [self.start * 2**i for i in range(int(math.log2(image_size // self.start)) + 1)]
        self.blocks, self.to_image = nn.ModuleList(), nn.ModuleList()
        prev = 0
        for size in self.sizes:
            c_in = prev + sum(block_channels(size, base) for e in self.entry if e == size)
            self.blocks.append(_conv_pair(c_in, block_channels(size, base)))
            self.to_image.append(nn.Conv2d(block_channels(size, base), channels, 1))
            prev = block_channels(size, base)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        assert len(inputs) == len(self.input_shapes), "one input per conditioning layer"
        for x, shape in zip(inputs, self.input_shapes):
            assert tuple(x.shape[1:]) == shape, f"conditioning input {tuple(x.shape[1:])} != {shape}"
        embedded = [emb(x) for emb, x in zip(self.embed, inputs)]
        h = logits = None
        for size, block, to_image in zip(self.sizes, self.blocks, self.to_image):
            parts = [] if h is None else [nn.functional.interpolate(h, scale_factor=2, mode="nearest")]
            parts += [e for e, at in zip(embedded, self.entry) if at == size]
            h = block(torch.cat(parts, dim=1))
            up = 0 if logits is None else nn.functional.interpolate(logits, scale_factor=2, mode="bilinear",
                                                                    align_corners=False)
            logits = up + to_image(h)
        img = torch.sigmoid(logits)
        return img.expand(-1, 3, -1, -1) if self.channels == 1 else img


def generate(G: nn.Module, inputs: list, device, batch: int = 64):
    """``G``'s images ``(n, C, S, S)`` float32 numpy of numpy inputs ``[(n, *shape_i)]``, in batches."""
    out = []
    with torch.no_grad():
        for s in range(0, len(inputs[0]), batch):
            out.append(G([torch.from_numpy(np.ascontiguousarray(x[s:s + batch])).float().to(device)
                          for x in inputs]).float().cpu().numpy())
    return np.concatenate(out)


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
