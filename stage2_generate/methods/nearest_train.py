"""``nearest_train``, an honest baseline: for each test image, the training image whose true
conditioning features correlate best with its decoded ones (retrieval from a gallery, no generation)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from stage2_generate.methods.base import Method, TestData

# images normalised at a time: each row is centred and scaled on its own, so the result is the same bit for bit as
# in one piece, while the float64 copies stay a chunk's size (the demo's gallery: 1080 images of ~200k features,
# 1.7 GB in float64, made twice, where the float32 gallery itself is 0.9 GB)
CHUNK = 128


class NearestTrain(Method):
    """The gallery (the fit images' true conditioning inputs, each row centred and unit-norm) is built once,
    when first needed."""

    role = "baseline"
    describe = "the training image whose true features best match the decoded ones (retrieval, not reconstruction)"

    @functools.cached_property
    def gallery(self) -> torch.Tensor:
        return self.normalised(self.ctx.train_inputs)

    @classmethod
    def normalised(cls, arrays: list[np.ndarray], chunk: int = CHUNK) -> torch.Tensor:
        """The arrays' rows flattened and concatenated, each centred and scaled to unit norm (float32), ``chunk``
        rows at a time."""
        n = len(arrays[0])
        out = None
        for start in range(0, n, chunk):
            rows = [x[start:start + chunk] for x in arrays]
            part = cls._normalise(torch.from_numpy(np.concatenate([x.reshape(len(x), -1) for x in rows], axis=1)))
            if out is None:
                out = torch.empty((n, part.shape[1]), dtype=part.dtype)
            out[start:start + len(part)] = part
        return out

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        x = x.double() - x.double().mean(dim=1, keepdim=True)
        return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()

    def reconstruct(self, test: TestData) -> np.ndarray:
        best = (self.normalised(test.decoded) @ self.gallery.T).argmax(dim=1).numpy()
        return self.ctx.train_images[best]
