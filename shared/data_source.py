"""What every data reader shares: the data section it reads (``DataSource``), one split's voxels
(``SplitData``), and the interface each format's reader implements (``Reader``).

Two readers implement it, one per format: ``shared.bdata_reader`` (the Kamitani lab's BData files with
an image list and an image folder per split; the simulated experiment is written in exactly this format
and read by the same reader) and ``shared.matrix_data`` (one .mat / .npz file of matrices).
``shared.datasets`` picks the reader of a config and is what the rest of the code calls. This module
imports no reader, so the readers and the facade form no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from shared.config import Config, DataConfig, SplitFiles
from shared.errors import UserError


@dataclass(frozen=True)
class DataSource:
    """What the readers read: the data section, and whether it is read as a matrix dataset."""

    data: DataConfig
    matrix: bool

    @property
    def root(self) -> Path:
        return Path(self.data.root)

    @classmethod
    def of(cls, cfg: Config) -> DataSource:
        """The readers' part of ``cfg`` (the one place that reads ``Config.reads_matrix``)."""
        return cls(cfg.data, cfg.reads_matrix)


@dataclass
class SplitData:
    """Brain data of one (subject, split, ROI).

    X: ``(n_samples, n_voxels)`` float32 voxel responses. names: ``(n_samples,)``
    stimulus name of each row. When averaged, rows are one per image, in image-list
    order; otherwise one per trial, in file order.
    """

    X: np.ndarray
    names: np.ndarray
    roi_key: str
    path: Path

    def of_images(self, names) -> SplitData:
        """The rows whose stimulus is one of ``names`` (e.g. the validation hold-out's trials)."""
        keep = np.isin(self.names, list(names))
        return replace(self, X=self.X[keep], names=self.names[keep])


class Reader(Protocol):
    """One data format, read for the stages. Every method reads the config's ``DataSource``."""

    def files(self) -> dict[str, Path]:
        """Every brain data file, keyed ``<subject>`` or ``<subject>/<split>`` (run metadata hashes them)."""

    def brain_file(self, subject: str, split: str) -> Path:
        """The file holding ``subject``'s voxels of ``split``."""

    def check(self, cv_folds: int) -> None:
        """Fail before any work with one line naming the first bad input."""

    def names(self, split: str) -> list[str]:
        """Each stimulus of ``split`` once, in the feature store's row order."""

    def load(self, subject: str, split: str, roi: str, average: bool) -> SplitData:
        """Voxels of ``roi`` for one subject and split, one row per trial (or per image when averaged)."""

    def stimuli(self, split: str, names: list[str] | np.ndarray, size: int) -> np.ndarray:
        """The stimuli named ``names`` as ``(n, 3, size, size)`` float32 RGB in [0, 1]."""

    def stimuli_file(self, split: str, names: list[str]) -> Path:
        """Where ``split``'s stimulus images are (a folder or the matrix file), after checking ``names`` are there."""

    def native_size(self) -> int | None:
        """The side of the test stimuli when all are one square size, else None."""

    def seen_in_training(self, split: str) -> list[str]:
        """The stimuli of test set ``split`` whose pixels equal a training stimulus'."""


def split_files(src: DataSource, split: str) -> SplitFiles:
    """The configured files of ``split`` (``data.train`` or ``data.test.<split>``)."""
    if split == "train":
        return src.data.train
    if split not in src.data.test:
        raise UserError(f"split {split!r} is not configured; 'data.test' has {list(src.data.test)}")
    return src.data.test[split]


def average_by_name(X: np.ndarray, rows: np.ndarray, order: list[str]) -> np.ndarray:
    """``(len(order), n_voxels)`` float32: the mean of the rows of each name in ``order``."""
    index = {n: i for i, n in enumerate(order)}
    inverse = np.array([index[n] for n in rows], dtype=np.int64)
    sums = np.zeros((len(order), X.shape[1]))
    np.add.at(sums, inverse, X)
    counts = np.bincount(inverse, minlength=len(order))
    return (sums / counts[:, None]).astype(np.float32)


def check_folds(cv_folds: int, n_images: int, subject: str) -> None:
    """Cross-validation holds out whole images: at least ``cv_folds`` distinct training images."""
    if n_images < cv_folds:
        raise UserError(f"the training data of {subject} have {n_images} images, fewer than decoder.cv_folds="
                        f"{cv_folds} (cross-validation holds out whole images); set decoder.cv_folds to at most "
                        f"{n_images} (and at least 2), or use more training images")
