"""``latent_regression`` (Seeliger et al. 2018; Güçlütürk et al. 2017): ridge from the voxels to the
latent codes of an autoencoder of the training stimuli, then the linear map tuned through the
autoencoder's frozen decoder with its pixel and perceptual losses (``methods.latent_tune_steps``);
test voxels are decoded through the map and the decoder. The coder is in ``_image_coder.py``."""

from __future__ import annotations

import logging

import numpy as np

from stage2_generate.methods import _image_coder as coders
from stage2_generate.methods._image_coder import CoderMethod
from stage2_generate.methods.base import TestData, TrainData

log = logging.getLogger(__name__)


class LatentRegression(CoderMethod):
    kind = coders.AUTOENCODER

    def fit(self, train: TrainData) -> LatentRegression:
        c, ridge = self.ctx, train.ridge
        fit = ridge.fit(coders.encode_means(self.coder, c.train_images, c.device))
        W, b = fit.coef()
        self.W, self.b, history = coders.tune_latent_map(c.experiment, self.coder, W, b, ridge.Xz, ridge.trial_img,
                                                         c.train_images, c.device)
        self.x_std = ridge.x_std
        self.tuning[f"{train.subject}/{train.roi}"] = history
        if history:
            log.info("%s %s %s: loss through the decoder on training trials %.4g -> %.4g (ridge penalty %g)",
                     self.name, train.subject, train.roi, history[0], history[-1], fit.alpha)
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return coders.decode(self.coder, self.x_std.transform(test.voxels) @ self.W + self.b, self.ctx.device)
