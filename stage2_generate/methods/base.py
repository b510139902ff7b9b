"""The one shape every reconstruction method has, and what a stage-2 run hands it.

A method is built once per run from the ``Context`` (the run's trained generator, the training
images it may fit, their true conditioning inputs, the settings sections it reads), then, for each
subject and ROI, ``fit(TrainData)`` on that subject's and ROI's training trials and
``reconstruct(TestData)`` for each test set (and the validation hold-out). Every method returns
images ``(n, 3, S, S)`` in [0, 1] at the generator's size (a grayscale set's generator repeats its
one channel); the pipeline scores them all alike (``shared/evaluation.py``), in gray for a grayscale set.

Class attributes say how the pipeline treats a method:

* ``role``: ``"generator"`` (the WGAN-GP generator, always run), ``"published"`` (chosen by
  ``methods.run``), ``"baseline"`` (run when ``eval.baselines``), ``"blend"`` (the generator's image
  blended with a baseline's, run when ``eval.blend``), ``"reference"`` (a row for comparison that is not a
  reconstruction from the brain: the generator fed true features);
* ``reads``: ``"features"`` (stage 1's decoded features) or ``"voxels"`` (the training trials and
  the trial-averaged test voxels, through the voxel ridge);
* ``validated``: also scored on the validation hold-out; ``first_roi_only``: one row per subject,
  not per ROI (it does not depend on the ROI).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from shared.config import Config, DecoderConfig, FeaturesConfig, GeneratorConfig, MethodsConfig
from shared.datasets import SplitData
from shared.store import ExperimentStore


@dataclass
class Context:
    """What a stage-2 run hands every method, once.

    ``train_images`` ``(n, 3, S, S)`` and ``train_names``: the images methods fit (the validation
    hold-out left out); ``train_inputs``: their true conditioning inputs per layer; ``G``: the trained
    WGAN-GP generator (EMA, evaluation mode; None until stage 2 has trained it, i.e. while methods are
    built and checked); ``held_images``: the validation hold-out's images ``(n_held, 3, S, S)``, in the order
    of ``TrainData.held.names`` (None without a hold-out), which the image coders autoencode to choose their
    tick; ``transforms``: the conditioning layers' ``LayerTransform``; ``methods``: the
    methods section of the config; ``experiment``: the whole config, read for the identity of what a
    method trains (its training key, like the generator's; the image coders' keys) and by the methods
    that still take it whole (the image coders, ``end_to_end``'s check of the brain files).
    """

    generator: GeneratorConfig
    features: FeaturesConfig
    decoder: DecoderConfig
    methods: MethodsConfig
    pixel_ridge_sizes: list[int]
    validation_metric: str
    seed: int
    work: Path
    store: ExperimentStore | None
    device: Any
    train_images: np.ndarray
    train_names: list[str]
    channels: int
    G: Any = None
    held_images: np.ndarray | None = None
    transforms: list = field(default_factory=list)
    train_inputs: list[np.ndarray] = field(default_factory=list)
    experiment: Config | None = None
    _shared: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, cfg: Config, **values) -> Context:
        """A context with ``cfg``'s sections and ``values`` for the rest."""
        return cls(generator=cfg.generator, features=cfg.features, decoder=cfg.decoder, methods=cfg.methods,
                   seed=cfg.seed, work=cfg.work_path, pixel_ridge_sizes=list(cfg.eval.pixel_ridge_sizes),
                   validation_metric=cfg.eval.validation_metric, experiment=cfg,
                   **values)

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """One object for every method of the run that asks for ``key`` (e.g. the inversions' feature network);
        the key names everything the object depends on beyond the context."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


@dataclass
class TrainData:
    """One subject's and ROI's training trials of the images methods fit (None when no method reads voxels);
    ``held``: the validation hold-out of this subject and ROI (None without one) and ``held_score``, which
    scores reconstructions of it by ``eval.validation_metric`` (their mean); ``held_values``, when given, the
    same per held-out image ``(n_held,)`` (what a tick choice weighs its noise with: ``held_scorer``). A method
    may choose a setting there, never on test images."""

    ctx: Context
    subject: str
    roi: str
    trials: SplitData | None
    held: TestData | None = None
    held_score: Callable[[np.ndarray], float] | None = None
    held_values: Callable[[np.ndarray], np.ndarray] | None = None

    def held_scorer(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """Per-image values ``(n_held,)`` of ``eval.validation_metric`` of reconstructions of the hold-out
        (``held_values``); with ``held_score`` alone, its mean as one value (too few to weigh noise: a tick
        choice then keeps the last tick and says so); None without a hold-out."""
        if self.held is None:
            return None
        if self.held_values is not None:
            return self.held_values
        if self.held_score is not None:
            return lambda recon: np.atleast_1d(np.float64(self.held_score(recon)))
        return None

    @functools.cached_property
    def ridge(self):
        """The ``VoxelRidge`` of these trials, shared by every voxel method of this subject and ROI."""
        from stage2_generate.methods import _voxel_ridge

        if self.trials is None:
            raise ValueError("no training trials were loaded for this run: a method that reads the voxel ridge "
                             "must say reads = 'voxels'")
        c = self.ctx
        return _voxel_ridge.VoxelRidge(c.decoder, c.seed, self.trials, c.train_names, c.device)


@dataclass
class TestData:
    """The images to reconstruct: ``names`` of test set ``split`` (or the validation hold-out), with
    the generator's decoded conditioning inputs of them (per layer ``(n, *shape)``) and, when a method
    reads voxels, their trial-averaged voxels ``(n, n_voxels)``, both in ``names`` order."""

    __test__ = False  # not a pytest test class, despite its name

    subject: str
    roi: str
    split: str
    names: list[str]
    decoded: list[np.ndarray]
    voxels: np.ndarray | None = None


class Method:
    """The interface; a method overrides ``reconstruct`` and, where it has them, ``fit``, ``check``,
    ``settings`` and ``row``."""

    name: ClassVar[str] = ""  # set by the registry (stage2_generate/methods/__init__.py)
    # one sentence a reader of summary.md needs to read this method's rows (written into metrics.json)
    describe: ClassVar[str] = ""
    role: ClassVar[str] = "published"
    reads: ClassVar[str] = "features"
    validated: ClassVar[bool] = True
    first_roi_only: ClassVar[bool] = False
    # bump when a code change alters what this method computes from an unchanged config: the result keys of the
    # configs that run it move (``compare.cache.result_key``), and their committed tables show as stale
    version: ClassVar[int] = 1

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @classmethod
    def store_layers(cls, methods: MethodsConfig, features: FeaturesConfig) -> list[str]:
        """Layers of the feature store this method reads beyond the generator's conditioning layers (checked
        before stage 2 writes anything)."""
        return []

    def check(self) -> None:
        """Refuse, before stage 2 writes anything, what this method would resume from or could not train on."""

    def lock_folders(self) -> dict[Path, str]:
        """The folders ``fit`` writes and locks for the rest of the run (folder -> what it is, e.g. a generator's
        checkpoints), over every subject and ROI: stage 2 takes them all up front with its generator's, in one
        global order (``shared.locks.acquire_in_order``), so runs listing them in other orders never deadlock."""
        return {}

    def fit(self, train: TrainData) -> Method:
        """Fit to one subject's and ROI's training data, replacing the previous fit (a no-op for methods that
        need none); returns the method itself."""
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        """Images ``(n, C, S, S)`` in [0, 1] of ``test.names``."""
        raise NotImplementedError

    def settings(self) -> dict:
        """What ``metrics.json`` records of this method's settings (``reconstruction_info.methods``)."""
        return {}

    def row(self) -> dict:
        """Values of the current fit kept beside its scores in ``metrics.json`` (e.g. a chosen penalty; the
        tables show only metrics, ``shared/report.py`` lists the keys in ``ROW_VALUES``)."""
        return {}
