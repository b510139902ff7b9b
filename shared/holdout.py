"""The validation hold-out: training images set aside to choose settings and ticks.

Settings are chosen on held-out training images, never on test images. The hold-out is
drawn over distinct stimulus names, so every repetition of an image falls on one side, and
it is seeded by the experiment's seed, so every stage and every method sees the same split.
Stage 1 still decodes every training image (out of fold); stage 2 trains the generator and
every method on the rest and scores the held-out images' out-of-fold decoded features.
"""

from __future__ import annotations

import numpy as np


def validation_split(names: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(fit names, validation names)`` of the distinct training images ``names``, each in ``names``' order.

    ``round(fraction * n)`` images are held out (at least one when ``fraction`` > 0 and there are
    at least two images, and never all of them); ``fraction`` 0 holds out none.
    """
    unique = list(dict.fromkeys(names))
    n = len(unique)
    n_val = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    rng = np.random.default_rng([seed, 0x5EED, 16])
    held = set(np.asarray(unique, dtype=object)[rng.permutation(n)[:n_val]].tolist())
    return [u for u in unique if u not in held], [u for u in unique if u in held]
