"""Every reconstruction method stage 2 runs, behind one interface (``base.Method``).

``REGISTRY`` maps each method's name (as ``metrics.json``, the tables and ``methods.run`` spell
it) to its class; ``shared.config.METHODS`` is the tuple configs are validated against, and a test
checks the two agree, in the same order. Adding a method: one module here with a ``Method`` subclass,
its import and one line below, its name in ``shared/config/schema.py``'s ``METHODS`` (a published
method goes last in both: ``PUBLISHED`` is the tail of ``METHODS``).

| name | module | from |
| --- | --- | --- |
| ``wgan_gp``, ``wgan_gp_true_features`` | ``wgan_gp.py`` | decoded features (true features) |
| ``wgan_gp_blend`` (with ``eval.blend``) | ``blend.py`` | the generator's and pixel ridge's images |
| ``pixel_ridge`` | ``pixel_ridge.py`` | voxels |
| ``nearest_train`` | ``nearest_train.py`` | decoded features |
| ``inversion_dgn``, ``inversion_pixels`` | ``inversion.py`` | decoded features |
| ``end_to_end`` | ``end_to_end.py`` | voxels |
| ``latent_regression`` | ``latent_regression.py`` | voxels |
| ``vae`` | ``vae.py`` | voxels |

Private helpers: ``_voxel_ridge.py`` (the ridge every voxel method fits), ``_image_coder.py``
(training the coders of ``latent_regression`` and ``vae``; their networks and losses: ``_coder_nets.py``),
``_inversion.py`` (the inversions' optimisation).
"""

from __future__ import annotations

from stage2_generate.methods.base import Context, Method, TestData, TrainData
from stage2_generate.methods.blend import WganGpBlend
from stage2_generate.methods.end_to_end import EndToEnd
from stage2_generate.methods.inversion import InversionDgn, InversionPixels
from stage2_generate.methods.latent_regression import LatentRegression
from stage2_generate.methods.nearest_train import NearestTrain
from stage2_generate.methods.pixel_ridge import PixelRidge
from stage2_generate.methods.vae import Vae
from stage2_generate.methods.wgan_gp import TrueFeatureInput, WganGp

REGISTRY: dict[str, type[Method]] = {
    "wgan_gp": WganGp,
    "wgan_gp_true_features": TrueFeatureInput,
    "wgan_gp_blend": WganGpBlend,
    "pixel_ridge": PixelRidge,
    "nearest_train": NearestTrain,
    "inversion_dgn": InversionDgn,
    "inversion_pixels": InversionPixels,
    "end_to_end": EndToEnd,
    "latent_regression": LatentRegression,
    "vae": Vae,
}
for _name, _cls in REGISTRY.items():
    _cls.name = _name


def of_role(role: str) -> list[str]:
    """The names of the registered methods of ``role`` (see ``base.Method``), in registry order."""
    return [name for name, cls in REGISTRY.items() if cls.role == role]


def selected(run: list[str] | tuple[str, ...], baselines: bool, blend: bool = False) -> list[type[Method]]:
    """The classes a stage-2 run reconstructs with, in the order of its tables: the generator, its blend with
    pixel ridge (when ``blend``), the published methods of ``run`` from decoded features then from voxels (each
    in ``run``'s order), the baselines (when ``baselines``), the references."""
    chosen = [REGISTRY[name] for name in run]
    roles = [REGISTRY[name] for name in of_role("generator")]
    roles += [REGISTRY[name] for name in of_role("blend")] if blend else []
    roles += [c for c in chosen if c.reads == "features"] + [c for c in chosen if c.reads == "voxels"]
    roles += [REGISTRY[name] for name in of_role("baseline")] if baselines else []
    return roles + [REGISTRY[name] for name in of_role("reference")]


__all__ = ["REGISTRY", "Context", "Method", "TestData", "TrainData", "of_role", "selected"]
