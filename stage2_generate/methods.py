"""The published methods this system descends from, run beside the WGAN-GP generator on the same
decoded features and scored with the same metrics and judge (``methods.run``):

* ``inversion_dgn``: iterative feature inversion (Shen et al. 2019, PLOS Comput Biol) with this
  project's trained generator as the image prior, optimising its conditioning inputs from the
  decoded features (so it refines the WGAN-GP reconstruction);
* ``inversion_pixels``: the same inversion of the pixels themselves, from the mean training image
  (the paper's reconstruction without a generator);
* ``end_to_end`` (Shen et al. 2019, Front Comput Neurosci): a generator trained from voxels to
  images (``end_to_end.py``);
* ``latent_regression`` (Seeliger et al. 2018; Güçlütürk et al. 2017): ridge from voxels to the
  latent codes of an autoencoder of the training stimuli, tuned through its frozen decoder;
* ``vae`` (Han et al. 2019): ridge from voxels to a VAE's latent means, decoded by the VAE
  (``image_coder.py`` for both coders).

The first two start from the decoded features (``reconstruct``), the others from the voxels
(``from_voxels``), with the same training trials and the same ridge as the ``pixel_ridge``
baseline. See ``stage2_generate/inversion.py`` for the optimisation.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from shared.config import FEATURE_METHODS, VOXEL_METHODS, Config
from shared.store import ExperimentStore
from stage2_generate.inversion import invert, norm_corrected, typical_sd

log = logging.getLogger(__name__)

CODERS = {"latent_regression": "autoencoder", "vae": "vae"}  # the image coder each latent method decodes through


def preflight(cfg: Config, train_names: list[str], train_images: np.ndarray, channels: int) -> None:
    """Check what the voxel methods would resume from or train on, before stage 2 writes anything."""
    from shared.datasets import load_split
    from stage2_generate import end_to_end
    from stage2_generate.image_coder import check_coder

    for name in cfg.methods.run:
        if name in CODERS:
            check_coder(cfg, CODERS[name], channels, train_images)
    if "end_to_end" in cfg.methods.run:
        for subject in cfg.data.subjects:
            for roi in cfg.data.rois:
                train = load_split(cfg, subject, "train", roi, average=False)
                end_to_end.preflight(cfg, subject, roi, train, train_names, train_images, channels)


class Methods:
    """Reconstructions of the methods in ``cfg.methods.run`` for one (subject, ROI, test set) at a time."""

    def __init__(self, cfg: Config, store: ExperimentStore, G: torch.nn.Module, train_images: np.ndarray,
                 channels: int, device, train_names: list[str] | None = None):
        """``train_images`` ``(n, 3, S, S)`` and ``train_names``: the images the methods fit (the validation
        hold-out left out; None = every training image in the store)."""
        self.cfg, self.store, self.G, self.device = cfg, store, G, device
        self.train_names = train_names
        self.feature_names = [name for name in cfg.methods.run if name in FEATURE_METHODS]
        self.voxel_names = [name for name in cfg.methods.run if name in VOXEL_METHODS]
        self.train_images, self.channels = train_images, channels
        self.tuning: dict[str, list[float]] = {}  # "<subject>/<roi>" -> latent_regression's loss per tick
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
                rows = None if self.train_names is None else arr.rows_for(self.train_names)
                out[layer] = typical_sd(arr, self.cfg.decoder.chunk_units, rows)
        return out

    def targets(self, subject: str, roi: str, split: str, names: list[str]) -> dict[str, np.ndarray]:
        """The norm-corrected decoded features of ``names``, per inversion layer ``(n, *unit_shape)``."""
        out = {}
        for layer in self.layers:
            with self.store.open_decoded(subject, roi, layer, split) as arr:
                out[layer] = norm_corrected(arr.read(arr.rows_for(names)), self.true_sd[layer]).reshape(
                    len(names), *arr.unit_shape)
        return out

    def info(self) -> dict:
        """What ``metrics.json`` records of the methods run (``reconstruction_info.methods``)."""
        m = self.cfg.methods
        out: dict = {"run": list(m.run)}
        if self.feature_names:
            out.update(inversion_layers=self.layers, inversion_iterations=m.inversion_iterations,
                       inversion_feature_network=f"{self.cfg.features.network} [{self.cfg.features.weights}]")
        if any(name in CODERS for name in self.voxel_names):
            out.update(coder={k: getattr(m, k) for k in ("coder_latent", "coder_iterations", "coder_lr", "vae_beta",
                                                         "latent_tune_steps", "latent_tune_lr")},
                       latent_tuning_loss=self.tuning)
        return out

    @functools.cached_property
    def coders(self) -> dict:
        """The image coders the voxel methods need, trained once on the training stimuli."""
        from stage2_generate.image_coder import train_coder

        return {name: train_coder(self.cfg, CODERS[name], self.train_images, self.channels, self.device)
                for name in self.voxel_names if name in CODERS}

    def from_voxels(self, subject: str, roi: str, ridge, tests: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """``{split: {method: (n, C, S, S)}}`` of the voxel methods from the test voxels ``tests``
        ``{split: (n, n_voxels)}`` (rows as given); ``ridge``: the ``VoxelRidge`` of the training trials."""
        from stage2_generate.end_to_end import train_end_to_end
        from stage2_generate.image_coder import decode, encode_means, tune_latent_map
        from stage2_generate.models import generate

        out: dict[str, dict[str, np.ndarray]] = {split: {} for split in tests}
        for name in self.voxel_names:
            if name == "end_to_end":
                G = train_end_to_end(self.cfg, subject, roi, ridge.Xz, ridge.trial_img, self.train_images,
                                     self.channels, self.device)
                for split, X in tests.items():
                    out[split][name] = generate(G, [ridge.x_std.transform(X)], self.device)
                continue
            coder = self.coders[name]
            fit = ridge.fit(encode_means(coder, self.train_images, self.device))
            if name == "vae":
                for split, X in tests.items():
                    out[split][name] = decode(coder, fit.predict(X), self.device)
                continue
            W, b = fit.coef()
            W, b, history = tune_latent_map(self.cfg, coder, W, b, ridge.Xz, ridge.trial_img, self.train_images,
                                            self.device)
            self.tuning[f"{subject}/{roi}"] = history
            if history:
                log.info("latent_regression %s %s: loss through the decoder on training trials %.4g -> %.4g "
                         "(ridge penalty %g)", subject, roi, history[0], history[-1], fit.alpha)
            for split, X in tests.items():
                out[split][name] = decode(coder, ridge.x_std.transform(X) @ W + b, self.device)
        return out

    def reconstruct(self, subject: str, roi: str, split: str, names: list[str],
                    inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``{method: (n, C, S, S)}`` for the test images ``names``; ``inputs``: the generator's decoded
        conditioning inputs of those images (what the WGAN-GP reconstruction is made from)."""
        if not self.feature_names:
            return {}
        m = self.cfg.methods
        targets = self.targets(subject, roi, split, names)
        out: dict[str, list[np.ndarray]] = {name: [] for name in self.feature_names}
        for s in range(0, len(names), m.inversion_batch):
            rows = slice(s, s + m.inversion_batch)
            t = {k: torch.from_numpy(v[rows]).to(self.device) for k, v in targets.items()}
            for name in self.feature_names:
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
            self.G.eval()  # clamped to [0, 1], as it reconstructs
            render, clamp = self.G, False  # a grayscale generator already repeats its channel to RGB
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
