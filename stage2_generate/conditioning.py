"""Conditioning inputs of the generator, read from the feature store.

For each conditioning layer the features are z-scored per unit with the statistics
of the true training features; a conv layer is then average-pooled to the generator
block it enters (``(C, r, r)``; pooling also averages out decoding noise): the largest of the
generator's block sides (``models.block_sizes``: the image size, its half rounded up, ... down
to the last side of at least 4; powers of two for a power-of-two image) not above the map's own
side. Maps smaller than the smallest block stay as they are and are upsampled to it by the
generator. fc layers stay vectors. Decoded features go through the same transform and are then
rescaled per sample to the RMS of the true training inputs, because ridge shrinks
predictions towards the mean. A ``pixels<N>`` layer (the stimulus itself) is z-scored but neither pooled
(the generator pools it where it enters) nor rescaled: undoing its z-scoring gives back the decoded image
exactly, which ``generator.start: decoded_pixels`` starts from.

What the generator is conditioned on during training (``generator.train_inputs``;
``ConditionSampler`` draws each batch):

* ``true``: the true features of the training images;
* ``corrupted``: true features mixed with noise per sample,
  ``c = rho * x + sqrt(1 - rho^2) * rms * noise`` with ``rho`` uniform in
  ``[generator.condition_corr_min, 1]``;
* ``oof``: stage 1's out-of-fold decoded features of the training images (from a
  random subject and ROI per sample), i.e. what decoding really produces (features imported
  from the lab's files have none: ``imported.py`` then draws this share from true features);
* ``mix``: per sample one of the above with probabilities ``mix_true``,
  ``mix_corrupted``, ``mix_oof``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.config import GeneratorConfig
from shared.layers import is_pixels
from shared.store import ExperimentStore, FeatureArray
from stage2_generate.models import entry_block


def entry_size(height: int, image_size: int) -> int:
    """Side a ``height x height`` conv map is pooled to: the generator block it enters
    (``models.entry_block``); a map smaller than every block keeps its side (the generator upsamples it
    to its smallest block)."""
    return min(height, entry_block(height, image_size))


@dataclass
class LayerTransform:
    """z-scoring statistics and shape of one conditioning layer."""

    layer: str
    unit_shape: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray
    image_size: int = 64  # the generator's output size
    rms: float = 1.0  # RMS of transformed true training inputs

    @property
    def is_conv(self) -> bool:
        return len(self.unit_shape) == 3

    @property
    def is_pixels(self) -> bool:
        return is_pixels(self.layer)

    @property
    def out_shape(self) -> tuple[int, ...]:
        if not self.is_conv or self.is_pixels:
            return self.unit_shape
        side = entry_size(min(self.unit_shape[1:]), self.image_size)
        return (self.unit_shape[0], side, side)

    def apply_torch(self, feats: torch.Tensor) -> torch.Tensor:
        """The same transform on a batch of network activations ``(B, *unit_shape)`` (differentiable)."""
        mean = torch.as_tensor(self.mean, device=feats.device).view(1, *self.unit_shape)
        std = torch.as_tensor(self.std, device=feats.device).view(1, *self.unit_shape)
        z = (feats - mean) / std
        return torch.nn.functional.adaptive_avg_pool2d(z, self.out_shape[1:]) if self.is_conv else z

    def apply(self, arr: FeatureArray, rows=None, chunk_channels: int = 64) -> np.ndarray:
        """``(n_rows, *out_shape)`` float32, read a few channels at a time."""
        n = arr.shape[0] if rows is None else len(rows)
        if not self.is_conv:
            x = arr.read(rows)
            return ((x - self.mean) / self.std).astype(np.float32)
        c, h, w = self.unit_shape
        out = np.empty((n, *self.out_shape), dtype=np.float32)
        for c0 in range(0, c, chunk_channels):
            c1 = min(c, c0 + chunk_channels)
            units = slice(c0 * h * w, c1 * h * w)
            block = (arr.read(rows, units) - self.mean[units]) / self.std[units]
            t = torch.from_numpy(block.reshape(n, c1 - c0, h, w).astype(np.float32))
            out[:, c0:c1] = torch.nn.functional.adaptive_avg_pool2d(t, self.out_shape[1:]).numpy()
        return out


def fit_transforms(layers: list[str], image_size: int, store: ExperimentStore, train_names: list[str],
                   fit_names: list[str] | None = None, chunk_units: int = 4096
                   ) -> tuple[list[LayerTransform], list[np.ndarray]]:
    """Transforms of the conditioning ``layers`` of a generator of ``image_size`` px, with statistics of the
    images ``fit_names`` (default: all of ``train_names``; the validation hold-out is left out), and the
    transformed true inputs of every training image, in ``train_names`` order (read ``chunk_units`` units at
    a time)."""
    transforms, inputs = [], []
    for layer in layers:
        with store.open_true(layer, "train", names=train_names) as arr:
            rows = None if fit_names is None else np.sort(arr.rows_for(fit_names))
            means, stds = [], []
            for _, block in arr.iter_units(chunk_units):
                block = block if rows is None else block[rows]
                means.append(block.mean(axis=0))
                stds.append(block.std(axis=0))
            std = np.concatenate(stds)
            tf = LayerTransform(layer, arr.unit_shape, np.concatenate(means).astype(np.float32),
                                np.where(std > 1e-8, std, 1.0).astype(np.float32), image_size)
            x = tf.apply(arr)
        fit = x if rows is None else x[rows]
        tf.rms = float(np.sqrt((fit.reshape(len(fit), -1) ** 2).mean()))
        transforms.append(tf)
        inputs.append(x)
    return transforms, inputs


def true_inputs(store: ExperimentStore, transforms: list[LayerTransform], split: str,
                names: list[str]) -> list[np.ndarray]:
    out = []
    for tf in transforms:
        with store.open_true(tf.layer, split) as arr:
            out.append(tf.apply(arr, arr.rows_for(names)))
    return out


def decoded_inputs(store: ExperimentStore, transforms: list[LayerTransform], subject: str, roi: str,
                   split: str, names: list[str] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Transformed decoded features of a split (rescaled per sample), and their names.

    ``split`` is a test set or ``train_oof`` (the training images decoded out of fold);
    rows follow ``names`` if given, else the first layer's file order.
    """
    out = []
    for tf in transforms:
        with store.open_decoded(subject, roi, tf.layer, split) as arr:
            names = names or list(arr.names)  # every layer in the first layer's row order
            x = tf.apply(arr, arr.rows_for(names))
        if tf.is_pixels:  # the decoded image as decoded (see the module's docstring)
            out.append(x)
            continue
        flat = x.reshape(len(x), -1)
        rms = np.sqrt((flat**2).mean(axis=1))
        out.append((x * (tf.rms / (rms + 1e-8)).reshape(-1, *[1] * (x.ndim - 1))).astype(np.float32))
    return out, names


def corrupt(inputs: list[torch.Tensor], rms: list[float], corr_min: float, gen: torch.Generator) -> list[torch.Tensor]:
    """Mix each sample's inputs with noise at a random correlation in [corr_min, 1]."""
    n = inputs[0].shape[0]
    rho = corr_min + (1 - corr_min) * torch.rand(n, generator=gen)
    out = []
    for x, r in zip(inputs, rms):
        shape = (n,) + (1,) * (x.ndim - 1)
        noise = torch.randn(x.shape, generator=gen).to(x.device) * r
        rho_x = rho.to(x.device).view(shape)
        out.append(rho_x * x + torch.sqrt(1 - rho_x**2) * noise)
    return out


@dataclass
class ConditionSampler:
    """Conditioning inputs of a batch of training images, drawn as ``generator.train_inputs`` says.

    ``true``: per layer ``(n_images, *shape)``; ``oof``: per layer ``(n_sources, n_images, *shape)``
    (one source per subject x ROI) or None; ``probs``: (true, corrupted, oof).
    """

    true: list[torch.Tensor]
    oof: list[torch.Tensor] | None
    rms: list[float]
    probs: tuple[float, float, float]
    corr_min: float

    @classmethod
    def from_settings(cls, g: GeneratorConfig, true, oof, rms) -> ConditionSampler:
        """The sampler ``generator.train_inputs`` (of the generator section ``g``) asks for."""
        probs = {"true": (1.0, 0.0, 0.0), "corrupted": (0.0, 1.0, 0.0), "oof": (0.0, 0.0, 1.0),
                 "mix": (g.mix_true, g.mix_corrupted, g.mix_oof)}[g.train_inputs]
        total = sum(probs)
        return cls(true, oof, rms, tuple(p / total for p in probs), g.condition_corr_min)

    def __call__(self, idx: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        n = len(idx)
        kind = torch.multinomial(torch.tensor(self.probs), n, replacement=True, generator=gen)
        idx_d = idx.to(self.true[0].device)
        out = [x[idx_d] for x in self.true]
        if self.probs[1] > 0:
            noisy = corrupt(out, self.rms, self.corr_min, gen)
            out = self._where(kind == 1, noisy, out)
        if self.probs[2] > 0:
            src = torch.randint(0, self.oof[0].shape[0], (n,), generator=gen).to(idx_d.device)
            decoded = [o[src, idx_d].float() for o in self.oof]
            out = self._where(kind == 2, decoded, out)
        return out

    @staticmethod
    def _where(mask: torch.Tensor, a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.where(mask.to(x.device).view(-1, *[1] * (x.ndim - 1)), x, y) for x, y in zip(a, b)]
