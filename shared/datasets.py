"""Read an fMRI experiment in the Kamitani lab's BData format, and its stimulus images.

The same code reads the real Deep Image Reconstruction files and the simulated ones:
``BData`` from bdpy opens the HDF5 file, ``select('ROI_<name> = 1')`` picks the voxels,
the ``image_index`` column (1-based) is mapped to stimulus names through the split's
tab-separated image list (``<file stem>\\t<index>``), and test samples are averaged
over repetitions per image.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.config import Config, DataConfig, SplitFiles
from shared.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".JPG", ".bmp", ".tif", ".tiff")
ROI_ALIASES = {"V4": ("V4", "hV4"), "hV4": ("hV4", "V4")}


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
        from dataclasses import replace

        keep = np.isin(self.names, list(names))
        return replace(self, X=self.X[keep], names=self.names[keep])


def split_files(src: DataSource, split: str) -> SplitFiles:
    if split == "train":
        return src.data.train
    if split not in src.data.test:
        raise UserError(f"split {split!r} is not configured; 'data.test' has {list(src.data.test)}")
    return src.data.test[split]


def bdata_path(src: DataSource, subject: str, split: str) -> Path:
    return src.root / split_files(src, split).bdata.format(subject=subject)


def brain_file(src: DataSource, subject: str, split: str) -> Path:
    """The file holding ``subject``'s voxels of ``split`` (a BData file, or a matrix dataset's one file)."""
    if src.matrix:
        from shared.matrix_data import matrix_path

        return matrix_path(src, subject)
    return bdata_path(src, subject, split)


def bdata_files(src: DataSource) -> dict[str, Path]:
    """Every data file of the experiment, keyed ``<subject>/<split>`` (run metadata hashes them)."""
    if src.matrix:
        from shared.matrix_data import matrix_path

        return {s: matrix_path(src, s) for s in src.data.subjects}
    return {f"{s}/{split}": bdata_path(src, s, split) for s in src.data.subjects for split in ["train", *src.data.test]}


def _require_bdata(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"fMRI file {path} not found; put the subject's BData .h5 file there "
                        f"(figshare collection 7033577) or set data.root / data.*.bdata")


def _require_image_list(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"image list {path} not found; put the two-column '<image file>\\t<index>' list there "
                        f"or set data.*.image_list")


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(f"stimulus image folder {folder} not found; put the images there or set data.*.images")


def read_image_list(path: Path) -> dict[int, str]:
    """``{index: stem}`` from a two-column list: an image file name (or stem) and its 1-based
    index, tab- or comma-separated, in either order."""
    _require_image_list(path)
    mapping: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split(","))]
        numeric = [i for i, p in enumerate(parts[:2]) if _is_number(p)]
        if len(parts) < 2 or len(numeric) != 1:
            if lineno == 1 and not numeric:
                continue  # a header line
            raise UserError(f"{path} line {lineno} is not '<image stem>\\t<index>': {line!r}")
        index = int(float(parts[numeric[0]]))
        stem = parts[1 - numeric[0]]
        stem = Path(stem).stem if Path(stem).suffix in IMAGE_SUFFIXES else stem
        if index in mapping or stem in mapping.values():
            raise UserError(f"{path} line {lineno} repeats index {index} or image {stem!r}; each must appear once")
        mapping[index] = stem
    return mapping


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def check_inputs(src: DataSource, cv_folds: int) -> None:
    """Fail before any work with one line naming the first bad input: a missing file or folder,
    a BData file that is not HDF5, truncated, without a configured ROI,
    with image indices not in its image list or with non-finite voxels; a stimulus image that
    is missing or unreadable; fewer training images than ``cv_folds``, the decoder's
    cross-validation folds (``DecoderConfig.folds_needed``: 0 when it does not cross-validate)."""
    if src.matrix:
        from shared import matrix_data

        for subject in src.data.subjects:
            for split in ["train", *src.data.test]:
                matrix_data.voxels(src, subject, split)  # also checks the images and that the counts agree
        matrix_data.check_subjects(src)
        _check_folds(cv_folds, len(matrix_data.names(src, "train")), src.data.subjects[0])  # distinct images, not rows
        return
    for split in ["train", *src.data.test]:
        spec = split_files(src, split)
        for subject in src.data.subjects:
            _require_bdata(bdata_path(src, subject, split))
        _require_image_list(src.root / spec.image_list)
        _require_folder(src.root / spec.images)
    for split in ["train", *src.data.test]:
        used: set[str] = set()
        for subject in src.data.subjects:
            for roi in src.data.rois:
                names = set(load_split(src, subject, split, roi, average=False).names)
                if split == "train":
                    _check_folds(cv_folds, len(names), subject)
                used |= names
        names = [n for n in split_image_names(src, split) if n in used]
        check_images_readable(src.root / split_files(src, split).images, names)


def _check_folds(cv_folds: int, n_images: int, subject: str) -> None:
    if n_images < cv_folds:
        raise UserError(f"the training data of {subject} have {n_images} images, fewer than decoder.cv_folds="
                        f"{cv_folds} (cross-validation holds out whole images); set decoder.cv_folds to at most "
                        f"{n_images} (and at least 2), or use more training images")


def check_images_readable(folder: Path, names: list[str]) -> None:
    """Every named stimulus exists in ``folder`` and decodes as an image (a truncated file fails)."""
    for path in image_paths(folder, names):
        _read_rgb(path)


def _read_rgb(path: Path):
    """The image at ``path`` as an RGB PIL image; an unreadable or truncated file is a ``UserError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as f:
            return f.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"stimulus image {path} cannot be read ({exc}); replace the file") from None


def split_image_names(src: DataSource, split: str) -> list[str]:
    """Stimulus names of a split in image-list order (the row order of the feature store)."""
    if src.matrix:
        from shared import matrix_data

        return matrix_data.names(src, split)
    mapping = read_image_list(src.root / split_files(src, split).image_list)
    return [mapping[i] for i in sorted(mapping)]


@functools.lru_cache(maxsize=4)  # the training file and up to three test files of one subject
def _open_bdata(path: str, stamp: tuple):
    import bdpy

    return bdpy.BData(path)


def open_bdata(path: Path):
    """The BData file at ``path`` (bdpy); a file that is not HDF5, or is damaged, is one ``UserError``."""
    import h5py

    _require_bdata(path)
    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(8)
        raise UserError(f"{path} is not an HDF5 file (it starts with {head!r}); BData files are HDF5 (.h5): check "
                        f"data.*.bdata points at the right file, or re-download it")
    st = path.stat()
    try:
        return _open_bdata(str(path), (st.st_size, st.st_mtime_ns))
    except (OSError, KeyError, ValueError) as exc:
        reason = str(exc).split("(")[0].strip() or type(exc).__name__
        raise UserError(f"{path} is a damaged or truncated HDF5 file ({reason}); re-download or re-export it "
                        f"(the download verb checks MD5s)") from None


def resolve_roi(bdata, roi: str, path: Path) -> str:
    """The metadata key for ``roi`` ('VC' or 'ROI_VC'); V4 and hV4 are interchangeable."""
    name = roi[4:] if roi.startswith("ROI_") else roi
    keys = list(bdata.metadata.key)
    for alias in ROI_ALIASES.get(name, (name,)):
        if f"ROI_{alias}" in keys:
            return f"ROI_{alias}"
    available = sorted(k[4:] for k in keys if k.startswith("ROI_"))
    raise UserError(f"ROI {roi!r} is not in {path}; 'data.rois' must be among {available}")


def load_split(src: DataSource, subject: str, split: str, roi: str, average: bool) -> SplitData:
    """Voxels of ``roi`` for one subject and split, labelled by stimulus name."""
    if src.matrix:  # one row per trial; the trials of one image (equal pixels) share its name
        from shared import matrix_data

        X = matrix_data.voxels(src, subject, split)
        names = np.array(matrix_data.row_names(src, subject, split))
        if average:  # one row per image, in split_image_names order
            order = matrix_data.names(src, split)
            if set(names) != set(order):
                matrix_data.check_subjects(src)  # names the file whose images differ
            X, names = average_by_name(X, names, order), np.array(order)
        return SplitData(X=X, names=names, roi_key=roi, path=matrix_data.matrix_path(src, subject))
    path = bdata_path(src, subject, split)
    _require_bdata(path)
    bdata = open_bdata(path)
    key = resolve_roi(bdata, roi, path)
    X = np.asarray(bdata.select(f"{key} = 1", verbose=False), dtype=np.float32)
    if "image_index" not in bdata.metadata.key:
        raise UserError(f"{path} has no 'image_index' column; it is not a Deep Image Reconstruction BData file")
    raw_index = bdata.select("image_index", verbose=False).ravel()
    index = np.rint(raw_index).astype(int)
    if np.isnan(raw_index).any() or np.abs(raw_index - index).max(initial=0) > 1e-6:
        raise UserError(f"{path} has non-integer or missing 'image_index' values; it must hold 1-based image indices")
    if X.shape[1] == 0:
        raise UserError(f"ROI {roi!r} has no voxels in {path}; choose another ROI in 'data.rois'")
    bad = ~np.isfinite(X)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        raise UserError(f"{path} has {int(bad.sum())} NaN or infinite voxel values in ROI {roi!r} ({len(cols)} of "
                        f"{X.shape[1]} voxels, first at column {cols[0]}); drop those voxels from the ROI or "
                        f"replace the values before decoding")
    spec = split_files(src, split)
    stems = read_image_list(src.root / spec.image_list)
    missing = sorted(set(index) - set(stems))
    if missing:
        raise UserError(f"{path} uses image_index {missing[0]} which is not in {src.root / spec.image_list}; use "
                        f"the image list that belongs to this file (data.*.image_list), or add that index to it")
    if average:
        order = sorted(set(index))
        X = np.stack([X[index == i].mean(axis=0) for i in order]).astype(np.float32)
        names = np.array([stems[i] for i in order])
    else:
        names = np.array([stems[i] for i in index])
    return SplitData(X=X, names=names, roi_key=key, path=path)


def average_by_name(X: np.ndarray, rows: np.ndarray, order: list[str]) -> np.ndarray:
    """``(len(order), n_voxels)`` float32: the mean of the rows of each name in ``order``."""
    index = {n: i for i, n in enumerate(order)}
    inverse = np.array([index[n] for n in rows], dtype=np.int64)
    sums = np.zeros((len(order), X.shape[1]))
    np.add.at(sums, inverse, X)
    counts = np.bincount(inverse, minlength=len(order))
    return (sums / counts[:, None]).astype(np.float32)


def image_paths(folder: Path, names: list[str] | np.ndarray) -> list[Path]:
    """The file of each stimulus name in ``folder`` (any common image suffix)."""
    _require_folder(folder)
    by_stem = {p.stem: p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES}
    paths = []
    for name in names:
        if name not in by_stem:
            raise UserError(f"stimulus image {name!r} not found in {folder}; put {name}.JPEG (or .png/.jpg) there")
        paths.append(by_stem[name])
    return paths


def load_images(folder: Path, names: list[str] | np.ndarray, size: int) -> np.ndarray:
    """Images as ``(n, 3, size, size)`` float32 RGB in [0, 1] (centre-cropped square, resized)."""
    from PIL import Image

    out = np.empty((len(names), 3, size, size), dtype=np.float32)
    for i, path in enumerate(image_paths(folder, names)):
        im = _read_rgb(path)
        w, h = im.size
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        if side != size:
            im = im.resize((size, size), Image.BICUBIC)
        out[i] = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out


def split_images(src: DataSource, split: str, names: list[str] | np.ndarray, size: int) -> np.ndarray:
    """The stimuli of ``split`` named ``names`` as ``(n, 3, size, size)`` float32 RGB in [0, 1],
    from the split's image folder or, for a matrix dataset, from its file."""
    if src.matrix:
        from shared import matrix_data

        return matrix_data.resized(src, split, list(names), size)
    return load_images(src.root / split_files(src, split).images, names, size)


def native_size(src: DataSource) -> int | None:
    """The side of the test stimuli when every one of them is the same square size (28 for a 28 x 28 set),
    else None (photographs of many sizes, as in the real study: then they are scored at the generator's
    size)."""
    if src.matrix:
        from shared import matrix_data

        h, w = matrix_data.images(src, src.data.subjects[0], "test").shape[1:3]
        return int(h) if h == w else None
    from PIL import Image

    sizes = set()
    for split in src.data.test:
        folder = src.root / split_files(src, split).images
        for path in image_paths(folder, split_image_names(src, split)):
            with Image.open(path) as im:
                sizes.add(im.size)
            if len(sizes) > 1:
                return None
    (w, h), = sizes
    return int(h) if h == w else None
