"""The data layer the stages call: each format's reader behind one interface.

``reader(src)`` gives the ``shared.data_source.Reader`` of a config's data: ``BDataReader``
(``shared.bdata_reader``: BData files with image lists and folders, real or simulated) or
``MatrixReader`` (``shared.matrix_data``: one .mat / .npz file of matrices). The functions below
are that interface as the stages have always called it; none of them looks at the format.
A new format is one more reader module and one more line in ``reader``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.bdata_reader import BDataReader, bdata_path, image_paths, load_images, read_image_list
from shared.data_source import DataSource, Reader, SplitData, average_by_name, split_files
from shared.matrix_data import MatrixReader

__all__ = ["DataSource", "Reader", "SplitData", "average_by_name", "bdata_files", "bdata_path", "brain_file",
           "check_inputs", "image_paths", "load_images", "load_split", "native_size", "read_image_list", "reader",
           "seen_in_training", "split_files", "split_image_names", "split_images", "stimuli_file"]


def reader(src: DataSource) -> Reader:
    """The reader of ``src``'s format."""
    return MatrixReader(src) if src.matrix else BDataReader(src)


def brain_file(src: DataSource, subject: str, split: str) -> Path:
    """The file holding ``subject``'s voxels of ``split`` (a BData file, or a matrix dataset's one file)."""
    return reader(src).brain_file(subject, split)


def bdata_files(src: DataSource) -> dict[str, Path]:
    """Every brain data file of the experiment (run metadata hashes them)."""
    return reader(src).files()


def check_inputs(src: DataSource, cv_folds: int) -> None:
    """Fail before any work with one line naming the first bad input: a missing file or folder,
    a BData file that is not HDF5, truncated, without a configured ROI,
    with image indices not in its image list or with non-finite voxels; a stimulus image that
    is missing or unreadable; a matrix file whose counts or subjects disagree; fewer training images
    than ``cv_folds``, the decoder's cross-validation folds (``DecoderConfig.folds_needed``: 0 when it
    does not cross-validate)."""
    reader(src).check(cv_folds)


def split_image_names(src: DataSource, split: str) -> list[str]:
    """Stimulus names of a split in image-list order (the row order of the feature store)."""
    return reader(src).names(split)


def load_split(src: DataSource, subject: str, split: str, roi: str, average: bool) -> SplitData:
    """Voxels of ``roi`` for one subject and split, labelled by stimulus name."""
    return reader(src).load(subject, split, roi, average)


def split_images(src: DataSource, split: str, names: list[str] | np.ndarray, size: int) -> np.ndarray:
    """The stimuli of ``split`` named ``names`` as ``(n, 3, size, size)`` float32 RGB in [0, 1]."""
    return reader(src).stimuli(split, names, size)


def stimuli_file(src: DataSource, split: str, names: list[str]) -> Path:
    """Where ``split``'s stimuli are read from (an image folder, or the matrix file), checking ``names`` are there."""
    return reader(src).stimuli_file(split, names)


def native_size(src: DataSource) -> int | None:
    """The side of the test stimuli when every one of them is the same square size (28 for a 28 x 28 set),
    else None (photographs of many sizes, as in the real study: then they are scored at the generator's
    size)."""
    return reader(src).native_size()


def seen_in_training(src: DataSource, split: str) -> list[str]:
    """The stimuli of test set ``split`` that are also training stimuli (some public sets reuse training images
    as test images): ``nearest_train`` reconstructs them perfectly by construction."""
    return reader(src).seen_in_training(split)
