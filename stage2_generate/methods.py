"""The published methods this system descends from, run beside the WGAN-GP generator on the same
decoded features and scored with the same metrics and judge (``methods.run``):

* ``inversion_dgn``: iterative feature inversion (Shen et al. 2019, PLOS Comput Biol) with this
  project's trained generator as the image prior, optimising its conditioning inputs from the
  decoded features (so it refines the WGAN-GP reconstruction);
* ``inversion_pixels``: the same inversion of the pixels themselves, from the mean training image
  (the paper's reconstruction without a generator).

See ``stage2_generate/inversion.py`` for the optimisation.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from shared.config import Config
from shared.store import ExperimentStore
from stage2_generate.inversion import invert, norm_corrected, typical_sd

log = logging.getLogger(__name__)


class Methods:
    """Reconstructions of the methods in ``cfg.methods.run`` for one (subject, ROI, test set) at a time."""

    def __init__(self, cfg: Config, store: ExperimentStore, G: torch.nn.Module, train_images: np.ndarray, device):
        self.cfg, self.store, self.G, self.device = cfg, store, G, device
        self.names = list(cfg.methods.run)
        self.layers = list(cfg.methods.inversion_layers or cfg.features.layers)
        self.mean_image = train_images.mean(axis=0)
        self.pixel_sd = float(train_images.std())

    @functools.cached_property
    def featnet(self):
        from shared.featnet import FeatureNet

        f = self.cfg.features
        return FeatureNet(f.network, f.weights, self.layers, input_size=f.input_size).to(self.device).eval()

    @functools.cached_property
    def true_sd(self) -> dict[str, float]:
        """The typical SD of each inversion layer's true training features (the norm correction's target)."""
        out = {}
        for layer in self.layers:
            with self.store.open_true(layer, "train") as arr:
                out[layer] = typical_sd(arr, self.cfg.decoder.chunk_units)
        return out

    def targets(self, subject: str, roi: str, split: str, names: list[str]) -> dict[str, np.ndarray]:
        """The norm-corrected decoded features of ``names``, per inversion layer ``(n, *unit_shape)``."""
        out = {}
        for layer in self.layers:
            with self.store.open_decoded(subject, roi, layer, split) as arr:
                out[layer] = norm_corrected(arr.read(arr.rows_for(names)), self.true_sd[layer]).reshape(
                    len(names), *arr.unit_shape)
        return out

    def reconstruct(self, subject: str, roi: str, split: str, names: list[str],
                    inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``{method: (n, C, S, S)}`` for the test images ``names``; ``inputs``: the generator's decoded
        conditioning inputs of those images (what the WGAN-GP reconstruction is made from)."""
        if not self.names:
            return {}
        m = self.cfg.methods
        targets = self.targets(subject, roi, split, names)
        out: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        for s in range(0, len(names), m.inversion_batch):
            rows = slice(s, s + m.inversion_batch)
            t = {k: torch.from_numpy(v[rows]).to(self.device) for k, v in targets.items()}
            for name in self.names:
                images, history = self._invert(name, t, [x[rows] for x in inputs],
                                               f"{name} {subject}/{roi}/{split} {s + 1}-{min(s + m.inversion_batch, len(names))}")
                log.info("%s %s %s %s images %d-%d: feature loss %.4g -> %.4g (mean over images)", name, subject,
                         roi, split, s + 1, s + len(images), history[0].mean(), history[-1].mean())
                out[name].append(images)
        return {k: np.concatenate(v) for k, v in out.items()}

    def _invert(self, name: str, targets: dict[str, torch.Tensor], inputs: list[np.ndarray], desc: str):
        m = self.cfg.methods
        n = len(next(iter(targets.values())))
        if name == "inversion_dgn":
            variables = [torch.from_numpy(np.ascontiguousarray(x)).float().to(self.device) for x in inputs]
            scale = 1.0  # the generator's inputs are z-scored

            def render(v):
                y = self.G(v)
                return y.expand(-1, 3, -1, -1) if y.shape[1] == 1 else y
            clamp = False
        else:  # inversion_pixels
            variables = [torch.from_numpy(np.repeat(self.mean_image[None], n, axis=0)).float().to(self.device)]
            scale = self.pixel_sd

            def render(v):
                return v[0]
            clamp = True
        self.G.requires_grad_(False)
        images, history = invert(self.featnet, targets, variables, render, m.inversion_iterations,
                                 (m.inversion_lr_start * scale, m.inversion_lr_end * scale), m.inversion_momentum,
                                 clamp, desc)
        return images.float().cpu().numpy(), history
