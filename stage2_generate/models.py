"""Generator and critic networks.

The generator maps conditioning features to an image; it is deterministic (no latent
noise): one reconstruction per brain sample. Its blocks run at the sides ``block_sizes``
gives: the image size ``S``, then ``ceil(S/2)``, ``ceil(S/4)``, ... down to the last side
of at least 4 (4, 8, ..., S for a power of two; 4, 7, 14, 28 for 28 px), so any image size
works at its native resolution. Conditioning enters at every resolution: fc vectors through
a learned projection at the first block, each conv map (already pooled by
``conditioning.entry_size``) at the largest block not above its own side (a map smaller
than the smallest block enters it upsampled), so low layers can carry detail.

The output is the training images' mean image plus a sum of every block's image
(StyleGAN2's "skip" generator): each block writes an image through a 1x1 convolution,
upsampled to the next block's side and added, so coarse blocks reach the pixels directly.
With ``start`` (``generator.start: decoded_pixels``) the output starts instead at the decoded image: the
``pixels<N>`` conditioning input, its z-scoring undone, brought to ``S`` as ``evaluation.at_size`` brings an
image (bilinear up, area down), so the blocks add only what the decoded image lacks.
There is no squashing non-linearity: the 1x1 convolutions start at zero, so an untrained
generator outputs exactly the mean image, and no pixel can saturate and lose its gradient.
In training mode (``.train()``) the output is left unclamped, so the pixel loss always has a
gradient; in evaluation mode (``.eval()``: reconstruction, samples, the EMA copy) and in
``generate`` it is clamped to [0, 1].

The generator has no batch statistics (no batch normalisation), so data-parallel training
over several processes computes exactly what one process computes on the same global batch.
A grayscale generator (``channels=1``) repeats its one channel to RGB for every network that
looks at it.

The critic follows WGAN-GP practice: no batch normalisation (the gradient penalty is
per sample), LeakyReLU, strided 4x4 convolutions while the side is at least 8, then a
linear head over the last map.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def block_sizes(image_size: int) -> list[int]:
    """Sides of the generator's blocks, ascending: ``image_size``, ``ceil(image_size / 2)``, ... down to
    the last side of at least 4 (``[4, 8, 16, 32, 64]`` for 64, ``[4, 7, 14, 28]`` for 28, ``[5, 10]``
    for 10). The one definition of the blocks: ``conditioning.entry_size`` pools maps to these."""
    sizes = [int(image_size)]
    while (sizes[-1] + 1) // 2 >= 4:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]


def entry_block(side: int, image_size: int) -> int:
    """The block a conv map of side ``side`` enters: the largest block side not above ``side``, or the
    smallest block when the map is smaller than every block (it is then upsampled)."""
    sizes = block_sizes(image_size)
    return max([s for s in sizes if s <= side], default=sizes[0])


def critic_sides(image_size: int) -> list[int]:
    """Sides of the critic's maps: the image, then halved by each strided 4x4 convolution while the side
    is at least 8 (``[64, 32, 16, 8, 4]`` for 64, ``[28, 14, 7]`` for 28, ``[10, 5]`` for 10)."""
    sides = [int(image_size)]
    while sides[-1] >= 8:
        sides.append(sides[-1] // 2)  # a 4x4 convolution, stride 2, padding 1
    return sides


def as_mean_image(mean_image, channels: int, image_size: int) -> torch.Tensor:
    """The ``(channels, S, S)`` float32 mean image of ``mean_image`` (``(C, S, S)``, ``(3, S, S)`` for a
    grayscale generator: its channel mean, or ``(1, S, S)``; None: 0.5 everywhere)."""
    if mean_image is None:
        return torch.full((channels, image_size, image_size), 0.5)
    m = torch.as_tensor(np.asarray(mean_image, dtype=np.float32) if not torch.is_tensor(mean_image)
                        else mean_image.detach().float().cpu())
    if m.ndim != 3 or tuple(m.shape[1:]) != (image_size, image_size) or m.shape[0] not in (1, 3):
        raise ValueError(f"mean_image must be (C, {image_size}, {image_size}) with C 1 or 3; got {tuple(m.shape)}")
    if m.shape[0] != channels:
        m = m.mean(0, keepdim=True) if channels == 1 else m.expand(channels, -1, -1)
    return m.clone().contiguous()


def block_channels(size: int, base: int) -> int:
    """Channels of the generator block at ``size x size``: wide at coarse blocks, narrow at fine ones."""
    return max(base // 2, min(4 * base, 32 * base // size))


def _conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2))


class Generator(nn.Module):
    """``forward(inputs: list of (B, *shape_i)) -> (B, 3, image_size, image_size)``.

    ``mean_image``: the training images' mean image ``(channels, S, S)`` (``(3, S, S)`` for a
    grayscale generator is reduced to its channel mean), the untrained generator's output;
    None: 0.5 everywhere. It is a buffer, saved in the state dict. ``start``: ``(i, mean, std)`` starts the
    output at input ``i`` (a ``pixels<N>`` layer, ``(C, N, N)``) times ``std`` plus ``mean`` (its z-scoring
    undone: the decoded image itself), brought to ``image_size``, in place of the mean image.
    """

    def __init__(self, input_shapes: list[tuple[int, ...]], image_size: int = 64, base: int = 64, channels: int = 3,
                 mean_image: np.ndarray | torch.Tensor | None = None, start: tuple | None = None):
        super().__init__()
        assert channels in (1, 3)
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.image_size = image_size
        self.channels = channels
        chain = block_sizes(image_size)
        entries = [entry_block(min(s[1:]), image_size) for s in self.input_shapes if len(s) == 3]
        has_vector = any(len(s) == 1 for s in self.input_shapes)
        self.start = chain[0] if has_vector or not entries else min(entries)
        self.entry = [entry_block(min(s[1:]), image_size) if len(s) == 3 else self.start for s in self.input_shapes]
        self.embed = nn.ModuleList()
        for shape, size in zip(self.input_shapes, self.entry):
            ch = block_channels(size, base)
            if len(shape) == 3:
                resample = []
                if tuple(shape[1:]) != (size, size):
                    resample = [nn.Upsample(size=(size, size), mode="nearest") if max(shape[1:]) <= size
                                else nn.AdaptiveAvgPool2d((size, size))]
                self.embed.append(nn.Sequential(*resample, nn.Conv2d(shape[0], ch, 1), nn.LeakyReLU(0.2)))
            else:
                self.embed.append(nn.Sequential(nn.Linear(shape[0], ch * size * size), nn.LeakyReLU(0.2),
                                                nn.Unflatten(1, (ch, size, size))))
        self.sizes = [s for s in chain if s >= self.start]
        self.blocks, self.to_image = nn.ModuleList(), nn.ModuleList()
        prev = 0
        for size in self.sizes:
            c_in = prev + sum(block_channels(size, base) for e in self.entry if e == size)
            self.blocks.append(_conv_pair(c_in, block_channels(size, base)))
            to_image = nn.Conv2d(block_channels(size, base), channels, 1)  # drawn, then zeroed: same seed stream
            nn.init.zeros_(to_image.weight)
            nn.init.zeros_(to_image.bias)
            self.to_image.append(to_image)
            prev = block_channels(size, base)
        self.register_buffer("mean_image", as_mean_image(mean_image, channels, image_size))
        self.from_input = None if start is None else int(start[0])
        if start is not None:
            shape = self.input_shapes[self.from_input]
            assert len(shape) == 3 and shape[0] in (1, 3), f"a start input must be (C, N, N); got {shape}"
            self.register_buffer("start_mean", torch.as_tensor(np.asarray(start[1], np.float32)).reshape(shape))
            self.register_buffer("start_std", torch.as_tensor(np.asarray(start[2], np.float32)).reshape(shape))

    def start_image(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Where the output starts: the decoded image (``start``) at ``image_size``, else the mean image."""
        if self.from_input is None:
            return self.mean_image
        x = self.start_mean + self.start_std * inputs[self.from_input]
        if x.shape[-1] != self.image_size:
            mode = {"mode": "area"} if x.shape[-1] > self.image_size else {"mode": "bilinear", "align_corners": False}
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), **mode)
        return x.mean(1, keepdim=True) if x.shape[1] > self.channels else x  # a gray layer broadcasts to RGB

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        assert len(inputs) == len(self.input_shapes), "one input per conditioning layer"
        for x, shape in zip(inputs, self.input_shapes):
            assert tuple(x.shape[1:]) == shape, f"conditioning input {tuple(x.shape[1:])} != {shape}"
        embedded = [emb(x) for emb, x in zip(self.embed, inputs)]
        h = skip = None
        for size, block, to_image in zip(self.sizes, self.blocks, self.to_image):
            parts = [] if h is None else [nn.functional.interpolate(h, size=(size, size), mode="nearest")]
            parts += [e for e, at in zip(embedded, self.entry) if at == size]
            h = block(torch.cat(parts, dim=1))
            up = 0 if skip is None else nn.functional.interpolate(skip, size=(size, size), mode="bilinear",
                                                                  align_corners=False)
            skip = up + to_image(h)
        img = self.start_image(inputs) + skip
        if not self.training:
            img = img.clamp(0, 1)
        return img.expand(-1, 3, -1, -1) if self.channels == 1 else img


def generate(G: nn.Module, inputs: list, device, batch: int = 64):
    """``G``'s images ``(n, C, S, S)`` float32 numpy in [0, 1] of numpy inputs ``[(n, *shape_i)]``, in batches
    (clamped whatever ``G``'s mode)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(inputs[0]), batch):
            out.append(G([torch.from_numpy(np.ascontiguousarray(x[s:s + batch])).float().to(device)
                          for x in inputs]).float().clamp(0, 1).cpu().numpy())
    return np.concatenate(out)


def strided_body(image_size: int, base: int) -> tuple[list[nn.Module], int, int]:
    """The critic's (and the image coder's encoder's) strided 4x4 convolutions while the side is at
    least 8: ``(layers, channels out, final side)``."""
    layers, ch = [], 3
    sides = critic_sides(image_size)
    for i in range(len(sides) - 1):
        out = min(base * 2**i, 8 * base)
        layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch = out
    return layers, ch, sides[-1]


class Critic(nn.Module):
    """``forward(images (B, 3, S, S)) -> (B,)`` scores; ``features`` gives the last hidden map."""

    def __init__(self, image_size: int = 64, base: int = 64):
        super().__init__()
        layers, ch, side = strided_body(image_size, base)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch * side * side, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images).flatten(1)).squeeze(1)
