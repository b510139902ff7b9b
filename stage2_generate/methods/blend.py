"""``wgan_gp_blend``, the two pathways as one image: the generator's image and pixel ridge's, blended.

Pixel ridge (the low-level pathway: stage 1's decoded pixels, or its own ridge from voxels to pixels) and the
generator (the high-level one: drawn from decoded DNN features) are two estimates of each image whose errors
differ, so a weighted mean of the two can score better on pixel metrics than either. Two ways of blending, each
over the weights ``a`` of ``WEIGHTS``:

* ``whole``: ``a`` × the generator's image + (1 − ``a``) × pixel ridge's;
* ``coarse``: only the coarse parts are blended, at pixel ridge's own resolution (the size it chose: what it
  decodes), and the generator's finer detail is kept whole, so a blend toward pixel ridge does not blur it.

The weight and the way are chosen on the validation hold-out by ``eval.validation_metric``, never on test images,
by the rule that chooses the generator's tick: the candidate with the highest mean score (a tie keeps the larger
``a``, then ``whole``) reconstructs when it beats the generator's own image (``a`` = 1) beyond the hold-out's noise,
else ``a`` = 1; with fewer than ``watch.MIN_HOLDOUT`` held-out images, or none, ``a`` = 1 and the record says why.
The validation table then scores the blend on the images its weight was chosen on, where it cannot score below the
generator (a = 1 is the fallback) but can below pixel ridge (only the generator is tested against): read that
column as what the choice found, not as evidence; the test images never enter the choice.

Both parts are the rows of the same names: the same trained generator (its tick already chosen) and the same pixel
ridge fit (one per subject and ROI, shared). Run when ``eval.blend`` is on.
"""

from __future__ import annotations

import numpy as np

from shared.evaluation import at_size
from stage2_generate.methods.base import Context, Method, TestData, TrainData
from stage2_generate.methods.pixel_ridge import PixelRidge
from stage2_generate.methods.wgan_gp import WganGp
from stage2_generate.watch import MIN_HOLDOUT, paired_gain

WEIGHTS = tuple(round(0.1 * k, 1) for k in range(11))  # a: 0 (pixel ridge's image) .. 1 (the generator's)


def coarse_offset(generated: np.ndarray, decoded: np.ndarray, coarse: int) -> np.ndarray:
    """Coarse ``decoded`` − coarse ``generated``: both area-averaged to ``coarse`` px and brought back."""
    low = lambda x: at_size(at_size(x.astype(np.float32), coarse, clip=False), x.shape[-1], clip=False)
    return low(decoded) - low(generated)


def blend(generated: np.ndarray, decoded: np.ndarray, weight: float, coarse: int | None = None,
          offset: np.ndarray | None = None) -> np.ndarray:
    """``weight`` × ``generated`` + (1 − ``weight``) × ``decoded`` (both in [0, 1], so the blend is too). With
    ``coarse`` (px), only the images' coarse parts are blended and the generator's finer detail is kept whole:
    ``generated`` + (1 − ``weight``) × ``coarse_offset`` (``offset``, when already computed), clipped to [0, 1]."""
    g = generated.astype(np.float32)
    if coarse is None or coarse >= g.shape[-1]:
        return (weight * g + (1.0 - weight) * decoded.astype(np.float32)).astype(np.float32)
    offset = coarse_offset(generated, decoded, coarse) if offset is None else offset
    return np.clip(g + (1.0 - weight) * offset, 0, 1).astype(np.float32)


def choose_weight(generated: np.ndarray, decoded: np.ndarray, values,
                  coarse: int | None = None) -> tuple[tuple[float, str], dict]:
    """The weight of ``WEIGHTS`` and the way (``"whole"`` images, or ``"coarse"``: their coarse parts at ``coarse``
    px, ``blend``) that reconstruct, and a record of the choice. ``values`` scores blends of the held-out images,
    one value per image. The candidate with the highest mean (a tie keeps the larger weight, then the whole images)
    replaces the generator's own image (``a`` = 1) only when it beats it beyond the hold-out's noise, by the rule
    that chooses the generator's tick (``watch.paired_gain``: the lower bootstrap quantile of the paired gain above
    0, and at least ``watch.MIN_HOLDOUT`` held-out images)."""
    modes = ("whole", "coarse") if coarse is not None and coarse < generated.shape[-1] else ("whole",)
    offset = coarse_offset(generated, decoded, coarse) if "coarse" in modes else None  # once for every weight
    per = {(w, m): np.asarray(values(blend(generated, decoded, w, coarse if m == "coarse" else None, offset)),
                              np.float64) for m in modes for w in WEIGHTS}
    means = {k: float(np.nanmean(v)) for k, v in per.items()}
    best, base = max(means, key=lambda k: (means[k], k[0], k[1] == "whole")), (1.0, "whole")
    n = len(per[base])
    record: dict = {"validation": {f"{m} {w:.1f}": round(v, 5) for (w, m), v in means.items()}, "holdout_images": n,
                    "highest": f"{best[1]} {best[0]:.1f}"}
    if n < MIN_HOLDOUT:
        record["holdout_too_small"] = True
        return base, record
    gain, low = paired_gain(per[best], per[base])
    record.update(gain=round(gain, 5), gain_low=round(low, 5), beyond_noise=bool(low > 0))
    return (best if low > 0 else base), record


class WganGpBlend(Method):
    """The generator's and pixel ridge's images of each test image, blended with the weight the hold-out chose."""

    role = "blend"
    reads = "voxels"  # pixel ridge fits its own ridge from voxels when stage 1 decoded no pixels layer
    describe = ("a × wgan_gp + (1 − a) × pixel_ridge, the whole images or only their coarse parts at pixel ridge's "
                "resolution (keeping the generator's detail): the weight a (0 to 1 by 0.1) and the way chosen on the "
                "validation hold-out, where it must beat the generator beyond noise (else a = 1)")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.generator, self.pixels = WganGp(ctx), PixelRidge(ctx)
        self.weight, self.mode, self.record, self.coarse = 1.0, "whole", {}, None

    @classmethod
    def store_layers(cls, methods, features) -> list[str]:
        return PixelRidge.store_layers(methods, features)

    def fit(self, train: TrainData) -> WganGpBlend:
        self.pixels.fit(train)
        self.weight, self.mode, self.record = 1.0, "whole", {}
        self.coarse = int(self.pixels.record["size"])  # pixel ridge's own resolution: what it decodes
        values = train.held_scorer()
        if values is not None:
            (self.weight, self.mode), self.record = choose_weight(
                self.generator.reconstruct(train.held), self.pixels.reconstruct(train.held), values, self.coarse)
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return blend(self.generator.reconstruct(test), self.pixels.reconstruct(test), self.weight,
                     self.coarse if self.mode == "coarse" else None)

    def row(self) -> dict:
        choice = self.record or {"weight": "1 (no validation hold-out)"}
        return {"blend_weight": self.weight, "blend_mode": self.mode,
                "choices": {"blend": {"coarse_px": self.coarse, **choice}}}
