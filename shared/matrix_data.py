"""Matrix datasets: one MATLAB (.mat v5 or v7.3) or NumPy (.npz) file of matrices.

Many public reconstruction sets ship this way: training and test voxel matrices (samples x
voxels) and the stimulus images as arrays, often 28 x 28 grayscale flattened to rows in
MATLAB's column-major order. ``data.source: matrix`` reads them (``data.matrix.*`` names the
variables) and hands the stages the same things a BData experiment gives: voxels per row,
a stimulus name per row and the images in [0, 1].

* A stimulus is its pixels: rows whose images are identical after reading (exactly equal
  decoded arrays) are trials of one stimulus, named once by a hash of its pixels with the split
  as prefix (``train_3fa2c1d9e0``; see ``stimulus_digest``), the same on every run and platform.
  ``names`` lists each stimulus once (order of first appearance), ``row_names`` gives every trial
  its stimulus' name, so repeats are averaged like BData test repetitions and stay on one side of
  image-grouped cross-validation. Subjects may show the trials in different orders, but must show
  the same stimuli.

* ``.mat`` v5 and older are read with scipy's ``loadmat``; v7.3 files are HDF5, read with
  h5py, whose arrays appear with MATLAB's axes reversed, so they are transposed back.
* Flattened images (``(n, H*W)`` or ``(n, H*W*C)``) are reshaped to ``data.matrix.image_shape``
  in ``order`` ``F`` (MATLAB, column-major; the default for .mat files) or ``C`` (NumPy, the
  default for .npz). Image arrays may also be stored whole, ``(n, H, W)`` or ``(n, H, W, C)``,
  with the samples on ``sample_axis`` (MATLAB stacks often put them last: ``-1``).
* Integer images are divided by their type's maximum (255 for uint8); float images outside
  [0, 1] are scaled by the set's minimum and maximum (logged).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np

from shared.data_source import DataSource, SplitData, average_by_name, check_folds
from shared.errors import UserError

log = logging.getLogger(__name__)


def matrix_path(src: DataSource, subject: str) -> Path:
    return src.root / src.data.matrix.file.format(subject=subject)


@functools.lru_cache(maxsize=2)
def _read(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    """Every numeric variable of the file (the mtime keys the cache)."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        import h5py

        if h5py.is_hdf5(p):  # MATLAB v7.3
            out = {}
            with h5py.File(p, "r") as f:
                for k, v in f.items():
                    if isinstance(v, h5py.Dataset) and v.dtype.kind in "biuf":
                        out[k] = np.asarray(v[()]).T  # MATLAB's column-major axes, reversed by HDF5
            return out
        from scipy.io import loadmat

        return {k: v for k, v in loadmat(p).items() if not k.startswith("__") and isinstance(v, np.ndarray)
                and v.dtype.kind in "biuf"}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"matrix file {p} cannot be read as .npz or .mat ({type(exc).__name__}: {exc}); check the "
                        f"file or re-download it") from None


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every numeric variable of the matrix file at ``path`` (cached while the file is unchanged)."""
    return _read(str(path), path.stat().st_mtime_ns)


def variables(src: DataSource, subject: str) -> dict[str, np.ndarray]:
    path = matrix_path(src, subject)
    if not path.is_file():
        raise UserError(f"matrix file {path} not found; put the .mat/.npz file there or set data.root / "
                        f"data.matrix.file")
    return _read(str(path), path.stat().st_mtime_ns)


def _variable(src: DataSource, subject: str, key: str) -> np.ndarray:
    name = getattr(src.data.matrix, key)
    arrays = variables(src, subject)
    if name not in arrays:
        raise UserError(f"matrix file {matrix_path(src, subject)} has no variable {name!r} (data.matrix.{key}); "
                        f"it holds {', '.join(sorted(arrays)) or 'no numeric arrays'}")
    return arrays[name]


def _split_key(split: str) -> str:
    return "train" if split == "train" else "test"


def voxels(src: DataSource, subject: str, split: str) -> np.ndarray:
    """``(n_samples, n_voxels)`` float32 of one split."""
    key = f"{_split_key(split)}_voxels"
    X = _variable(src, subject, key)
    if X.ndim != 2:
        raise UserError(f"data.matrix.{key} ({getattr(src.data.matrix, key)!r}) must be a 2-D samples x voxels "
                        f"matrix; it has shape {X.shape}")
    X = (X.T if src.data.matrix.voxel_sample_axis == 1 else X).astype(np.float32)
    n_images = len(images(src, subject, split))
    if X.shape[0] != n_images:
        if X.shape[1] == n_images:
            flip = 1 - src.data.matrix.voxel_sample_axis
            raise UserError(f"the {split} voxel matrix is {X.shape[0]} x {X.shape[1]} but there are {n_images} "
                            f"images: its samples are on the other axis; set data.matrix.voxel_sample_axis: {flip}")
        raise UserError(f"the {split} voxel matrix has {X.shape[0]} rows but there are {n_images} {split} images in "
                        f"{matrix_path(src, subject)}; each row must be the response to one image")
    return X


def names(src: DataSource, split: str) -> list[str]:
    """Each stimulus of the split once, in order of first appearance in the first subject's file
    (the row order of the feature store)."""
    return _stimuli(src, src.data.subjects[0], split)[1]


def row_names(src: DataSource, subject: str, split: str) -> list[str]:
    """The stimulus name of every row (trial) of ``subject``'s file; repeats share a name."""
    return _stimuli(src, subject, split)[0]


DIGEST_CHARS = 10  # hex characters of the digest in a name (more only if two stimuli of a split share them)


def stimulus_digest(image: np.ndarray) -> str:
    """SHA-256 (hex) of one decoded image ``(H, W, C)``: its shape as three little-endian int64, then its
    pixels as little-endian float32 in C order (-0.0 counted as 0.0), so equal pixels give equal digests
    on every platform."""
    arr = np.asarray(image, dtype=np.float32) + np.float32(0)  # -0.0 + 0.0 == +0.0
    h = hashlib.sha256(np.asarray(arr.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(arr, dtype="<f4").tobytes())  # C order, little-endian whatever the machine
    return h.hexdigest()


_CACHE: dict[tuple, np.ndarray] = {}  # decoded images of the last files read (feature batches reread them)
_NAMES: dict[tuple, tuple[list[str], list[str]]] = {}  # (row names, stimulus names) of the same files
_LOGGED: set[tuple] = set()


def _key(src: DataSource, subject: str, split: str) -> tuple:
    from dataclasses import astuple

    path = matrix_path(src, subject)
    return str(path), path.stat().st_mtime_ns if path.is_file() else 0, split, repr(astuple(src.data.matrix))


def images(src: DataSource, subject: str, split: str) -> np.ndarray:
    """The split's images, one per row, as ``(n, H, W, C)`` float32 in [0, 1] (C = 1 or 3), scaled like
    the training images (see ``_scale``)."""
    key = _key(src, subject, split)
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _images(src, subject, split)
    return _CACHE[key]


def _stimuli(src: DataSource, subject: str, split: str) -> tuple[list[str], list[str]]:
    """``(name of each row, each name once in order of first appearance)``."""
    key = _key(src, subject, split)
    if key not in _NAMES:
        imgs = images(src, subject, split)
        digests = [stimulus_digest(im) for im in imgs]
        unique = list(dict.fromkeys(digests))
        chars = DIGEST_CHARS
        while len({d[:chars] for d in unique}) < len(unique):  # a shared prefix: lengthen every name of the split
            chars += 2
        prefix = "train" if split == "train" else split
        rows = [f"{prefix}_{d[:chars]}" for d in digests]
        if len(_NAMES) >= 8:
            _NAMES.pop(next(iter(_NAMES)))
        _NAMES[key] = (rows, list(dict.fromkeys(rows)))
        if len(unique) < len(rows) and key not in _LOGGED:
            _LOGGED.add(key)
            log.info("%s: %d trials of %d distinct images (%s); repeats of an image are one stimulus", split,
                     len(rows), len(unique), key[0])
    return _NAMES[key]


def seen_in_training(src: DataSource, split: str) -> list[str]:
    """The stimuli of test set ``split`` whose pixels equal a training stimulus' (some public sets reuse
    training images as test images), in the first subject's file: a method that retrieves training images
    (``nearest_train``) reconstructs them perfectly by construction."""
    subject = src.data.subjects[0]
    train = {stimulus_digest(im) for im in images(src, subject, "train")}
    rows = row_names(src, subject, split)
    return list(dict.fromkeys(n for n, im in zip(rows, images(src, subject, split)) if stimulus_digest(im) in train))


def _images(src: DataSource, subject: str, split: str) -> np.ndarray:
    train = _shaped(src, subject, "train", _variable(src, subject, "train_images"))
    arr = train if split == "train" else _shaped(src, subject, split, _variable(src, subject, "test_images"))
    lo, hi = _scale(train)
    out = (arr.astype(np.float32) - lo) / (hi - lo)
    if not np.isfinite(out).all():
        raise UserError(f"data.matrix.{_split_key(split)}_images holds NaN or infinite values")
    return np.clip(out, 0, 1) if split != "train" else out


def _scale(train: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` mapping pixel values to [0, 1], from the training images: values already in [0, 1]
    stay; whole numbers up to 255 (8-bit, in any dtype) or 65535 (16-bit) are divided by that; anything
    else is scaled by the training images' minimum and maximum (and the test images the same way)."""
    lo, hi = float(np.nanmin(train)), float(np.nanmax(train))
    if lo >= 0 and hi <= 1:
        return 0.0, 1.0
    whole = train.dtype.kind in "ui" or bool(np.all(np.mod(train[np.isfinite(train)], 1) == 0))
    if lo >= 0 and whole and hi <= 255:
        return 0.0, 255.0
    if lo >= 0 and whole and hi <= 65535:
        return 0.0, 65535.0
    log.info("matrix images: values in [%.3g, %.3g], scaled to [0, 1] by the training images' range", lo, hi)
    return lo, max(hi, lo + 1e-12)


def _shaped(src: DataSource, subject: str, split: str, raw: np.ndarray) -> np.ndarray:
    """``(n, H, W, C)`` in the file's own value range."""
    m = src.data.matrix
    where = f"data.matrix.{_split_key(split)}_images"
    order = m.order if m.order != "auto" else ("C" if matrix_path(src, subject).suffix == ".npz" else "F")
    arr = np.moveaxis(raw, m.sample_axis, 0) if raw.ndim > 2 else raw
    if arr.ndim == 2:  # flattened rows
        if not m.image_shape:
            side = int(round(np.sqrt(arr.shape[1])))
            if side * side != arr.shape[1]:
                raise UserError(f"{where} holds flattened images of {arr.shape[1]} values, not a square; set "
                                f"data.matrix.image_shape to [height, width] or [height, width, channels]")
            shape = [side, side]
        else:
            shape = list(m.image_shape)
        if int(np.prod(shape)) != arr.shape[1]:
            raise UserError(f"{where} rows hold {arr.shape[1]} values but data.matrix.image_shape {shape} needs "
                            f"{int(np.prod(shape))}")
        arr = np.stack([row.reshape(shape, order=order) for row in arr])
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise UserError(f"{where} has shape {raw.shape}; expected (n, H*W), (n, H, W) or (n, H, W, 1 or 3) with the "
                        f"samples on data.matrix.sample_axis")
    return arr


def check_subjects(src: DataSource) -> None:
    """Several subjects' files must show the same stimuli (stimuli come from the first; the trials may
    be in another order and repeat differently)."""
    first = src.data.subjects[0]
    for subject in src.data.subjects[1:]:
        for split in ("train", "test"):
            a, b = images(src, first, split), images(src, subject, split)
            if a.shape[1:] != b.shape[1:] or set(names(src, split)) != set(row_names(src, subject, split)):
                raise UserError(f"the {split} images of {matrix_path(src, subject)} differ from those of "
                                f"{matrix_path(src, first)}; every subject's file must show the same images "
                                f"(in any trial order)")


def resized(src: DataSource, split: str, wanted: list[str], size: int) -> np.ndarray:
    """Images named ``wanted`` as ``(n, 3, size, size)`` float32 RGB in [0, 1] (grey repeated)."""
    from PIL import Image

    index: dict[str, int] = {}
    for i, n in enumerate(row_names(src, src.data.subjects[0], split)):
        index.setdefault(n, i)  # the first row showing the stimulus (its repeats are equal)
    missing = [n for n in wanted if n not in index]
    if missing:
        raise UserError(f"stimulus {missing[0]!r} is not in the {split} images of {matrix_path(src, src.data.subjects[0])}")
    imgs = images(src, src.data.subjects[0], split)
    out = np.empty((len(wanted), 3, size, size), dtype=np.float32)
    for k, name in enumerate(wanted):
        img = imgs[index[name]]
        h, w = img.shape[:2]
        side = min(h, w)  # centre-cropped square, as stimulus files are
        img = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        chans = []
        for c in range(img.shape[-1]):
            plane = Image.fromarray(img[..., c].astype(np.float32), mode="F")
            if plane.size != (size, size):
                plane = plane.resize((size, size), Image.BICUBIC)
            chans.append(np.clip(np.asarray(plane, dtype=np.float32), 0, 1))
        out[k] = np.stack(chans * 3 if len(chans) == 1 else chans)
    return out


class MatrixReader:
    """``shared.data_source.Reader`` over one matrix file per subject (one row per trial; the trials of one
    image, equal pixels, share its name)."""

    def __init__(self, src: DataSource):
        self.src = src

    def files(self) -> dict[str, Path]:
        return {s: matrix_path(self.src, s) for s in self.src.data.subjects}

    def brain_file(self, subject: str, split: str) -> Path:
        return matrix_path(self.src, subject)

    def check(self, cv_folds: int) -> None:
        src = self.src
        for subject in src.data.subjects:
            for split in ["train", *src.data.test]:
                voxels(src, subject, split)  # also checks the images and that the counts agree
        check_subjects(src)
        check_folds(cv_folds, len(names(src, "train")), src.data.subjects[0])  # distinct images, not rows

    def names(self, split: str) -> list[str]:
        return names(self.src, split)

    def load(self, subject: str, split: str, roi: str, average: bool) -> SplitData:
        src = self.src
        X = voxels(src, subject, split)
        rows = np.array(row_names(src, subject, split))
        if average:  # one row per image, in names() order
            order = names(src, split)
            if set(rows) != set(order):
                check_subjects(src)  # names the file whose images differ
            X, rows = average_by_name(X, rows, order), np.array(order)
        return SplitData(X=X, names=rows, roi_key=roi, path=matrix_path(src, subject))

    def stimuli(self, split: str, wanted, size: int) -> np.ndarray:
        return resized(self.src, split, list(wanted), size)

    def stimuli_file(self, split: str, wanted: list[str]) -> Path:
        return matrix_path(self.src, self.src.data.subjects[0])

    def native_size(self) -> int | None:
        h, w = images(self.src, self.src.data.subjects[0], "test").shape[1:3]
        return int(h) if h == w else None

    def seen_in_training(self, split: str) -> list[str]:
        return seen_in_training(self.src, split)
