"""``vae`` (Han et al. 2019): ridge from the voxels to a variational autoencoder's latent means (of the
training stimuli), decoded by the VAE. The coder is in ``_image_coder.py``; its kind is this method's name.
The VAE reconstructs from its tick chosen on the validation hold-out by autoencoding (``_image_coder``'s
docstring says why not by the whole method); ``settings()`` records it (``vae_tick``)."""

from __future__ import annotations

import numpy as np

from stage2_generate.methods import _coder_nets as coders
from stage2_generate.methods._image_coder import CoderMethod
from stage2_generate.methods.base import TestData, TrainData


class Vae(CoderMethod):
    describe = "ridge from voxels to a VAE's latent means, decoded by its decoder (Han et al. 2019)"

    @property
    def kind(self) -> str:
        # the coder's folder and key are named after the method (renaming it trains a new coder)
        return self.name

    def fit(self, train: TrainData) -> Vae:
        coder = self.fitted_coder(train)
        self.fitted = train.ridge.fit(coders.encode_means(coder, self.ctx.train_images, self.ctx.device))
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return coders.decode(self.coder, self.fitted.predict(test.voxels), self.ctx.device)
