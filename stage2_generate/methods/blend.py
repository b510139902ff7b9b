"""``wgan_gp_blend``, the two pathways as one image: ``a`` × the generator's image + (1 − ``a``) × pixel ridge's.

Pixel ridge (the low-level pathway: stage 1's decoded pixels, or its own ridge from voxels to pixels) and the
generator (the high-level one: drawn from decoded DNN features) are two estimates of each image whose errors
differ, so a weighted mean of the two can score better on pixel metrics than either. The weight ``a`` is chosen on
the validation hold-out by ``eval.validation_metric`` over ``WEIGHTS`` (the highest mean score; a tie keeps the
larger ``a``, the generator's side), as pixel ridge's contrast and the generator's tick are, never on test images;
without a hold-out there is nothing to choose with, and ``a`` = 1 (the generator's image) is kept and recorded so.
The validation table then scores the blend on the images its weight was chosen on (a slight optimism there, as
for pixel ridge's contrast); the test images never enter the choice.

Both parts are the rows of the same names: the same trained generator (its tick already chosen) and a pixel ridge
fitted exactly as the baseline is (its size and contrast chosen as there). Run when ``eval.blend`` is on.
"""

from __future__ import annotations

import numpy as np

from stage2_generate.methods.base import Context, Method, TestData, TrainData
from stage2_generate.methods.pixel_ridge import PixelRidge
from stage2_generate.methods.wgan_gp import WganGp

WEIGHTS = tuple(round(0.1 * k, 1) for k in range(11))  # a: 0 (pixel ridge's image) .. 1 (the generator's)


def blend(generated: np.ndarray, decoded: np.ndarray, weight: float) -> np.ndarray:
    """``weight`` × ``generated`` + (1 − ``weight``) × ``decoded`` (both in [0, 1], so the blend is too)."""
    return (weight * generated.astype(np.float32) + (1.0 - weight) * decoded.astype(np.float32)).astype(np.float32)


def choose_weight(generated: np.ndarray, decoded: np.ndarray, score) -> tuple[float, dict[str, float]]:
    """The weight of ``WEIGHTS`` whose blend of the held-out images scores highest by ``score`` (a tie keeps the
    larger weight), and every weight's score."""
    scores = {w: float(score(blend(generated, decoded, w))) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (scores[w], w))
    return best, {f"{w:.1f}": round(s, 5) for w, s in scores.items()}


class WganGpBlend(Method):
    """The generator's and pixel ridge's images of each test image, blended with the weight the hold-out chose."""

    role = "blend"
    reads = "voxels"  # pixel ridge fits its own ridge from voxels when stage 1 decoded no pixels layer
    describe = ("a × wgan_gp + (1 − a) × pixel_ridge: the two pathways' images blended, the weight a (0 to 1 by "
                "0.1) chosen on the validation hold-out (a = 1 without one)")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.generator, self.pixels = WganGp(ctx), PixelRidge(ctx)
        self.weight, self.scores = 1.0, {}

    @classmethod
    def store_layers(cls, methods, features) -> list[str]:
        return PixelRidge.store_layers(methods, features)

    def fit(self, train: TrainData) -> WganGpBlend:
        self.pixels.fit(train)
        self.weight, self.scores = 1.0, {}
        if train.held is not None and train.held_score is not None:
            self.weight, self.scores = choose_weight(self.generator.reconstruct(train.held),
                                                     self.pixels.reconstruct(train.held), train.held_score)
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return blend(self.generator.reconstruct(test), self.pixels.reconstruct(test), self.weight)

    def row(self) -> dict:
        choice = {"validation": self.scores} if self.scores else {"weight": "1 (no validation hold-out)"}
        return {"blend_weight": self.weight, "choices": {"blend": choice}}
