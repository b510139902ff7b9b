"""``nearest_train``, an honest baseline: for each test image, the training image whose true
conditioning features correlate best with its decoded ones (retrieval from a gallery, no generation)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from stage2_generate.methods.base import Method, TestData


class NearestTrain(Method):
    """The gallery (the fit images' true conditioning inputs, each row centred and unit-norm) is built once,
    when first needed."""

    role = "baseline"
    describe = "the training image whose true features best match the decoded ones (retrieval, not reconstruction)"

    @functools.cached_property
    def gallery(self) -> torch.Tensor:
        flat = np.concatenate([x.reshape(len(x), -1) for x in self.ctx.train_inputs], axis=1)
        return self._normalise(torch.from_numpy(flat))

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        x = x.double() - x.double().mean(dim=1, keepdim=True)
        return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()

    def reconstruct(self, test: TestData) -> np.ndarray:
        flat = np.concatenate([x.reshape(len(x), -1) for x in test.decoded], axis=1)
        best = (self._normalise(torch.from_numpy(flat)) @ self.gallery.T).argmax(dim=1).numpy()
        return self.ctx.train_images[best]
