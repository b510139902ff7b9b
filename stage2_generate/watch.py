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
# under this share of the training images' spread and has not grown since the last healthy
# tick: a generator starts at the mean image (spread 0) and a healthy one spreads out, however
# slowly at a small learning rate; one that collapsed (black everywhere) or is stuck does not.
DEAD_SPREAD = 0.02
GROWTH = 1.05  # under DEAD_SPREAD, a spread that has not grown by this factor since the last tick is stuck


def image_spread(images: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across images of ``(n, C, S, S)`` images."""
    return float(images.reshape(len(images), -1).std(axis=0).mean()) if len(images) > 1 else 0.0


class Health:
    """Tells dead ticks from live ones; ``reference_spread`` is ``image_spread`` of the training images."""

    def __init__(self, reference_spread: float):
        self.reference = reference_spread
        self.last: dict[str, float] = {}  # spread of each output at the last healthy tick (0 at the start)

    def dead_reason(self, outputs: dict[str, np.ndarray]) -> str | None:
        """Why the outputs ``{what: (n, C, S, S)}`` of this tick are dead, or None (then they are remembered)."""
        spreads = {}
        for what, images in outputs.items():
            if not np.isfinite(images).all():
                return f"{what} is not finite"
            spreads[what] = spread = image_spread(images)
            if len(images) > 1 and spread < DEAD_SPREAD * self.reference \
                    and spread <= GROWTH * self.last.get(what, 0.0) + 1e-9:
                return (f"{what} does not vary across images (spread {spread:.2g}, "
                        f"{spread / max(self.reference, 1e-12):.1%} of the training images')")
        self.last = spreads
        return None


@dataclass
class Validation:
    """The held-out training images a tick scores.

    ``inputs``: per source (subject x ROI) the generator's inputs of the held-out images, per layer
    ``(n_val, *shape)``; ``images``: ``(n_val, 3, S, S)``; ``score(recon, judge) -> {metric: mean}`` scores
    reconstructions of the held-out images by pixel metrics, and by the judge's identification when
    ``judge`` is true (the first source only: the judge watches, it does not choose, and it is the
    slow part); ``metric`` (a pixel metric) chooses the tick.
    """

    inputs: list[list[np.ndarray]]
    images: np.ndarray
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
