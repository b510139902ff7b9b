"""Iterative feature inversion (Shen et al. 2019, PLOS Comput Biol), two ways, from the decoded
features of the test images (the optimisation itself is in ``_inversion.py``):

* ``inversion_dgn``: with this project's trained generator as the image prior, optimising its
  conditioning inputs from the decoded features (so it refines the WGAN-GP reconstruction);
* ``inversion_pixels``: the pixels themselves, from the mean training image (the paper's
  reconstruction without a generator).

Both match ``methods.inversion_layers`` (default ``features.layers``) of the feature network, with
the decoded features norm-corrected to the typical SD of the true training features.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from shared.layers import is_pixels
from stage2_generate.methods._inversion import invert, norm_corrected, typical_sd
from stage2_generate.methods.base import Method, TestData

log = logging.getLogger(__name__)


class _Inversion(Method):
    """What both inversions share: the layers, the feature network and the norm-correction targets."""

    validated = False  # the hold-out has no decoded features of these layers to start from

    @classmethod
    def store_layers(cls, methods, features) -> list[str]:
        return list(methods.inversion_layers or features.layers)

    @property
    def layers(self) -> list[str]:
        return self.store_layers(self.ctx.methods, self.ctx.features)

    @property
    def featnet(self):
        from shared.featnet import FeatureNet

        f, c = self.ctx.features, self.ctx
        return c.shared(f"inversion featnet {self.layers}", lambda: FeatureNet(f.network, f.weights, self.layers,
                                                                input_size=f.input_size,
                                                                pixel_channels=self._pixel_channels()
                                                                ).to(c.device).eval())

    def _pixel_channels(self) -> int:
        """The channels stage 1 stored its pixels layers with (3 when none is inverted)."""
        pixels = [layer for layer in self.layers if is_pixels(layer)]
        if not pixels:
            return 3
        with self.ctx.store.open_true(pixels[0], "train") as arr:
            return arr.unit_shape[0]

    @property
    def true_sd(self) -> dict[str, float]:
        """The typical SD of each inversion layer's true training features (the norm correction's target)."""
        return self.ctx.shared(f"inversion true sd {self.layers}", self._true_sd)

    def _true_sd(self) -> dict[str, float]:
        out = {}
        for layer in self.layers:
            with self.ctx.store.open_true(layer, "train") as arr:
                out[layer] = typical_sd(arr, self.ctx.decoder.chunk_units, arr.rows_for(self.ctx.train_names))
        return out

    def targets(self, test: TestData) -> dict[str, np.ndarray]:
        """The norm-corrected decoded features of ``test.names``, per inversion layer ``(n, *unit_shape)``; read
        once for both inversions (the last test set's are kept)."""
        key = (test.subject, test.roi, test.split, tuple(test.names), tuple(self.layers))
        last = self.ctx.shared("inversion targets", dict)
        if last.get("key") != key:
            last.update(key=key, targets=self._read_targets(test))
        return last["targets"]

    def _read_targets(self, test: TestData) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.layers:
            with self.ctx.store.open_decoded(test.subject, test.roi, layer, test.split) as arr:
                out[layer] = norm_corrected(arr.read(arr.rows_for(test.names)), self.true_sd[layer]).reshape(
                    len(test.names), *arr.unit_shape)
        return out

    def settings(self) -> dict:
        m, f = self.ctx.methods, self.ctx.features
        return {"inversion_layers": self.layers, "inversion_iterations": m.inversion_iterations,
                "inversion_feature_network": f"{f.network} [{f.weights}]"}

    def reconstruct(self, test: TestData) -> np.ndarray:
        m, n = self.ctx.methods, len(test.names)
        targets = self.targets(test)
        out = []
        for s in range(0, n, m.inversion_batch):
            rows = slice(s, s + m.inversion_batch)
            t = {k: torch.from_numpy(v[rows]).to(self.ctx.device) for k, v in targets.items()}
            desc = f"{self.name} {test.subject}/{test.roi}/{test.split} {s + 1}-{min(s + m.inversion_batch, n)}"
            variables, render, clamp, scale = self.start(t, [x[rows] for x in test.decoded])
            images, history = invert(self.featnet, t, variables, render, m.inversion_iterations,
                                     (m.inversion_lr_start * scale, m.inversion_lr_end * scale), m.inversion_momentum,
                                     clamp, desc)
            log.info("%s %s %s %s images %d-%d: feature loss %.4g -> %.4g (mean over images)", self.name,
                     test.subject, test.roi, test.split, s + 1, s + len(images), history[0].mean(),
                     history[-1].mean())
            out.append(images.float().cpu().numpy())
        return np.concatenate(out)

    def start(self, targets: dict[str, torch.Tensor], inputs: list[np.ndarray]):
        """``(variables, render, clamp, step scale)`` of one batch."""
        raise NotImplementedError


class InversionDgn(_Inversion):
    """Optimises the generator's conditioning inputs, starting from the decoded ones."""

    describe = ("iterative inversion of the decoded features (Shen et al. 2019) through the trained generator, "
                "from its reconstruction")

    def start(self, targets, inputs):
        G = self.ctx.G
        variables = [torch.from_numpy(np.ascontiguousarray(x)).float().to(self.ctx.device) for x in inputs]
        G.eval()  # clamped to [0, 1], as it reconstructs; a grayscale generator already repeats its channel
        G.requires_grad_(False)
        return variables, G, False, 1.0  # the generator's inputs are z-scored


class InversionPixels(_Inversion):
    """Optimises the pixels, starting from the mean training image (clamped to [0, 1] after every step)."""

    describe = "the same inversion of the decoded features, optimising the pixels from the mean training image"

    def start(self, targets, inputs):
        images = self.ctx.train_images
        n = len(next(iter(targets.values())))
        variables = [torch.from_numpy(np.repeat(images.mean(axis=0)[None], n, axis=0)).float().to(self.ctx.device)]
        return variables, (lambda v: v[0]), True, float(images.std())
