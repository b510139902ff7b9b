"""The WGAN-GP generator's reconstructions (this project's method), and the same generator fed the
test images' true features.

The generator is trained once per run by the pipeline (``stage2_generate/train.py``) on stage 1's
out-of-fold decoded features of the training images; here it only draws. The true-feature row is a
reference, not a ceiling: it shows what the generator makes of features without decoding error
(it does not depend on the subject's ROI, so it has one row per subject).
"""

from __future__ import annotations

import numpy as np

from stage2_generate.conditioning import true_inputs
from stage2_generate.methods.base import Context, Method, TestData
from stage2_generate.models import generate


class WganGp(Method):
    """The trained generator drawing from the decoded features of the test images."""

    role = "generator"
    describe = "the WGAN-GP generator from the decoded features (its tick chosen on the validation hold-out)"

    def reconstruct(self, test: TestData) -> np.ndarray:
        return generate(self.ctx.G, test.decoded, self.ctx.device)


class TrueFeatureInput(Method):
    """The trained generator drawing from the true features of the test images."""

    role = "reference"
    describe = ("the same generator fed the true features (true-feature input: a reference, not a bound; a method "
                "from decoded features can beat it)")
    validated = False
    first_roi_only = True

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.drawn: dict[tuple, np.ndarray] = {}  # (test set, names) -> images

    def reconstruct(self, test: TestData) -> np.ndarray:
        """The same images for every subject (the true features are the stimuli's): drawn once per test set."""
        c, key = self.ctx, (test.split, tuple(test.names))
        if key not in self.drawn:
            self.drawn[key] = generate(c.G, true_inputs(c.store, c.transforms, test.split, test.names), c.device)
        return self.drawn[key]
