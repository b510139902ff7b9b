"""``pixel_ridge``, an honest baseline: ridge regression straight from voxels to pixels.

The targets are the training images at ``eval.pixel_ridge_size``, never above the images' own size
(``generator.image_size``; never upsampled); predictions are brought back to that size. Same kernel
ridge, z-scoring and cross-validated penalty as stage 1's feature decoders (``_voxel_ridge.py``);
the chosen penalty is shown beside its scores (``alpha``).
"""

from __future__ import annotations

import numpy as np
import torch

from stage2_generate.methods.base import Method, TestData, TrainData


class PixelMap:
    """A voxel ridge fitted to the training images' pixels at ``target`` px; ``predict`` gives images at
    ``size`` px."""

    def __init__(self, ridge, train_images: np.ndarray, size_cap: int):
        self.size = train_images.shape[-1]
        target = min(size_cap, self.size)
        small = torch.nn.functional.interpolate(torch.from_numpy(train_images), size=target, mode="area").numpy()
        self.shape = small.shape[1:]
        self.fitted = ridge.fit(small.reshape(len(small), -1))
        self.alpha = self.fitted.alpha

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Images ``(n, 3, size, size)`` in [0, 1] of voxel rows ``X`` ``(n, n_voxels)``."""
        pred = torch.from_numpy(self.fitted.predict(X).reshape(len(X), *self.shape))
        pred = torch.nn.functional.interpolate(pred, size=self.size, mode="bilinear", align_corners=False)
        return np.clip(pred.numpy(), 0, 1)


def pixel_ridge(size_cap: int, ridge, train_images: np.ndarray,
                tests: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """Reconstructions ``{split: (n, 3, S, S)}`` from test voxels ``{split: (n, n_voxels)}`` and the chosen
    penalty; ``size_cap``: ``eval.pixel_ridge_size``."""
    pixels = PixelMap(ridge, train_images, size_cap)
    return {split: pixels.predict(X) for split, X in tests.items()}, pixels.alpha


class PixelRidge(Method):
    role = "baseline"
    reads = "voxels"

    def fit(self, train: TrainData) -> PixelRidge:
        self.pixels = PixelMap(train.ridge, self.ctx.train_images, self.ctx.pixel_ridge_size)
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return self.pixels.predict(test.voxels)

    def row(self) -> dict:
        return {"alpha": self.pixels.alpha}
