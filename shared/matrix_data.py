"""Matrix datasets: one MATLAB (.mat v5 or v7.3) or NumPy (.npz) file of matrices.

Many public reconstruction sets ship this way: training and test voxel matrices (samples x
voxels) and the stimulus images as arrays, often 28 x 28 grayscale flattened to rows in
MATLAB's column-major order. ``data.source: matrix`` reads them (``data.matrix.*`` names the
variables) and hands the stages the same things a BData experiment gives: voxels per row,
a stimulus name per row (``train_00001``, ...; one image per row, so nothing is averaged)
and the images in [0, 1].

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
import logging
from pathlib import Path

import numpy as np

from shared.errors import UserError

log = logging.getLogger(__name__)


def matrix_path(cfg, subject: str) -> Path:
    return cfg.data_root / cfg.data.matrix.file.format(subject=subject)


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


def variables(cfg, subject: str) -> dict[str, np.ndarray]:
    path = matrix_path(cfg, subject)
    if not path.is_file():
        raise UserError(f"matrix file {path} not found; put the .mat/.npz file there or set data.root / "
                        f"data.matrix.file")
    return _read(str(path), path.stat().st_mtime_ns)


def _variable(cfg, subject: str, key: str) -> np.ndarray:
    name = getattr(cfg.data.matrix, key)
    arrays = variables(cfg, subject)
    if name not in arrays:
        raise UserError(f"matrix file {matrix_path(cfg, subject)} has no variable {name!r} (data.matrix.{key}); "
                        f"it holds {', '.join(sorted(arrays)) or 'no numeric arrays'}")
    return arrays[name]


def _split_key(cfg, split: str) -> str:
    return "train" if split == "train" else "test"


def voxels(cfg, subject: str, split: str) -> np.ndarray:
    """``(n_samples, n_voxels)`` float32 of one split."""
    key = f"{_split_key(cfg, split)}_voxels"
    X = _variable(cfg, subject, key)
    if X.ndim != 2:
        raise UserError(f"data.matrix.{key} ({getattr(cfg.data.matrix, key)!r}) must be a 2-D samples x voxels "
                        f"matrix; it has shape {X.shape}")
    X = X.astype(np.float32)
    n_images = len(images(cfg, subject, split))
    if X.shape[0] != n_images:
        if X.shape[1] == n_images:
            raise UserError(f"the {split} voxel matrix is {X.shape[0]} x {X.shape[1]} but there are {n_images} "
                            f"images: it looks transposed (voxels x samples); store it samples x voxels")
        raise UserError(f"the {split} voxel matrix has {X.shape[0]} rows but there are {n_images} {split} images in "
                        f"{matrix_path(cfg, subject)}; each row must be the response to one image")
    return X


def names(cfg, split: str) -> list[str]:
    n = len(_variable(cfg, cfg.data.subjects[0], f"{_split_key(cfg, split)}_voxels"))
    prefix = "train" if split == "train" else split
    return [f"{prefix}_{i + 1:05d}" for i in range(n)]


_CACHE: dict[tuple, np.ndarray] = {}  # decoded images of the last files read (feature batches reread them)


def images(cfg, subject: str, split: str) -> np.ndarray:
    """The split's images as ``(n, H, W, C)`` float32 in [0, 1] (C = 1 or 3), scaled like the training
    images (see ``_scale``)."""
    from dataclasses import astuple

    path = matrix_path(cfg, subject)
    key = (str(path), path.stat().st_mtime_ns if path.is_file() else 0, split, repr(astuple(cfg.data.matrix)))
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _images(cfg, subject, split)
    return _CACHE[key]


def _images(cfg, subject: str, split: str) -> np.ndarray:
    train = _shaped(cfg, subject, "train", _variable(cfg, subject, "train_images"))
    arr = train if split == "train" else _shaped(cfg, subject, split, _variable(cfg, subject, "test_images"))
    lo, hi = _scale(train)
    out = (arr.astype(np.float32) - lo) / (hi - lo)
    if not np.isfinite(out).all():
        raise UserError(f"data.matrix.{_split_key(cfg, split)}_images holds NaN or infinite values")
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


def _shaped(cfg, subject: str, split: str, raw: np.ndarray) -> np.ndarray:
    """``(n, H, W, C)`` in the file's own value range."""
    m = cfg.data.matrix
    where = f"data.matrix.{_split_key(cfg, split)}_images"
    order = m.order if m.order != "auto" else ("C" if matrix_path(cfg, subject).suffix == ".npz" else "F")
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


def check_subjects(cfg) -> None:
    """Several subjects' files must show the same images in the same order (stimuli come from the first)."""
    first = cfg.data.subjects[0]
    for subject in cfg.data.subjects[1:]:
        for split in ("train", "test"):
            a, b = images(cfg, first, split), images(cfg, subject, split)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise UserError(f"the {split} images of {matrix_path(cfg, subject)} differ from those of "
                                f"{matrix_path(cfg, first)}; every subject's file must hold the same images in the "
                                f"same order")


def resized(cfg, split: str, wanted: list[str], size: int) -> np.ndarray:
    """Images named ``wanted`` as ``(n, 3, size, size)`` float32 RGB in [0, 1] (grey repeated)."""
    from PIL import Image

    all_names = names(cfg, split)
    index = {n: i for i, n in enumerate(all_names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise UserError(f"stimulus {missing[0]!r} is not in the {split} images of {matrix_path(cfg, cfg.data.subjects[0])}")
    imgs = images(cfg, cfg.data.subjects[0], split)
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
