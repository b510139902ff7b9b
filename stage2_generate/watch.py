"""What each training tick checks: is the output alive, and is this the best tick on validation.

A generator can die without an error: its output stops varying across images (all black,
all grey, the mean image) or stops being finite, and the losses keep printing numbers. At
every tick ``Health.dead_reason`` looks at the outputs of the fixed sample batch (EMA and raw
generator) and of the held-out validation images; training rolls back on a dead tick (see
``train.train_generator``). ``Validation`` scores the held-out training images' out-of-fold
decoded features; the tick that scores best by ``eval.validation_metric`` (a pixel metric)
reconstructs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# A tick is dead when an output is not finite, or when the outputs' spread across images is
# under DEAD_SPREAD of the training images' spread and either has collapsed (fallen under half
# of the highest spread of a healthy tick) or is stuck (not grown at all since the last tick).
# A generator starts at the mean image (spread 0) and a healthy one spreads out, however slowly
# at a small learning rate; one that collapsed (black everywhere) or never moves does not.
DEAD_SPREAD = 0.02
STUCK = 1e-6  # growth under this share of the training images' spread is no growth


def image_spread(images: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across images of ``(n, C, S, S)`` images."""
    return float(images.reshape(len(images), -1).std(axis=0).mean()) if len(images) > 1 else 0.0


class Health:
    """Tells dead ticks from live ones; ``reference_spread`` is ``image_spread`` of the training images."""

    def __init__(self, reference_spread: float):
        self.reference = reference_spread
        self.last: dict[str, float] = {}  # spread of each output at the last healthy tick (0 at the start)
        self.best: dict[str, float] = {}  # the highest spread of each output at a healthy tick

    def reset(self) -> None:
        """Forget the spreads (training starts again from the mean image)."""
        self.last, self.best = {}, {}

    def dead_reason(self, outputs: dict[str, np.ndarray]) -> str | None:
        """Why the outputs ``{what: (n, C, S, S)}`` of this tick are dead, or None (then they are remembered)."""
        spreads = {}
        for what, images in outputs.items():
            if not np.isfinite(images).all():
                return f"{what} is not finite"
            spreads[what] = spread = image_spread(images)
            if len(images) < 2 or spread >= DEAD_SPREAD * self.reference:
                continue
            share = f"spread {spread:.2g}, {spread / max(self.reference, 1e-12):.1%} of the training images'"
            if spread < 0.5 * self.best.get(what, 0.0):
                return f"{what} collapsed: it no longer varies across images ({share})"
            if spread <= self.last.get(what, 0.0) + STUCK * self.reference:
                return f"{what} does not vary across images and is not spreading out ({share})"
        self.last = spreads
        self.best = {k: max(v, self.best.get(k, 0.0)) for k, v in spreads.items()}
        return None


@dataclass
class Validation:
    """The held-out training images a tick scores.

    ``inputs``: per source (subject x ROI) the generator's inputs of the held-out images, per layer
    ``(n_val, *shape)``; ``score(recon, judge) -> {metric: mean}`` scores
    reconstructions of the held-out images by pixel metrics, and by the judge's identification when
    ``judge`` is true (the first source only: the judge watches, it does not choose, and it is the
    slow part); ``metric`` (a pixel metric) chooses the tick.
    """

    inputs: list[list[np.ndarray]]
    score: Callable[[np.ndarray, bool], dict[str, float]]
    metric: str

    @property
    def key(self) -> str:
        return f"val_{self.metric}"

    def __call__(self, generate: Callable[[list[np.ndarray]], np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
        """``({val_<metric>: mean over sources}, reconstructions of the first source)``."""
        per_source, first = [], None
        for k, inputs in enumerate(self.inputs):
            recon = generate(inputs)
            first = recon if first is None else first
            if not np.isfinite(recon).all():  # dead: Health.dead_reason says so
                return {}, recon
            s = self.score(recon, k == 0)
            s["pixcorr_ssim"] = (s["pixcorr"] + s["ssim"]) / 2
            per_source.append(s)
        keys = dict.fromkeys(k for s in per_source for k in s)
        return {f"val_{k}": round(float(np.mean([s[k] for s in per_source if k in s])), 5) for k in keys}, first
