"""The BData reader: an fMRI experiment in the Kamitani lab's BData format, and its stimulus images.

The same code reads the real Deep Image Reconstruction files and the simulated ones:
``BData`` from bdpy opens the HDF5 file, ``select('ROI_<name> = 1')`` picks the voxels,
the ``image_index`` column (1-based) is mapped to stimulus names through the split's
tab-separated image list (``<file stem>\\t<index>``), and test samples are averaged
over repetitions per image. The stimuli are image files in the split's folder.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from shared.data_source import DataSource, SplitData, check_folds, split_files
from shared.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".JPG", ".bmp", ".tif", ".tiff")
ROI_ALIASES = {"V4": ("V4", "hV4"), "hV4": ("hV4", "V4")}


def bdata_path(src: DataSource, subject: str, split: str) -> Path:
    return src.root / split_files(src, split).bdata.format(subject=subject)


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


class BDataReader:
    """``shared.data_source.Reader`` over BData files, image lists and image folders."""

    def __init__(self, src: DataSource):
        self.src = src

    def _splits(self) -> list[str]:
        return ["train", *self.src.data.test]

    def files(self) -> dict[str, Path]:
        return {f"{s}/{split}": bdata_path(self.src, s, split) for s in self.src.data.subjects for split in self._splits()}

    def brain_file(self, subject: str, split: str) -> Path:
        return bdata_path(self.src, subject, split)

    def _folder(self, split: str) -> Path:
        return self.src.root / split_files(self.src, split).images

    def check(self, cv_folds: int) -> None:
        src = self.src
        for split in self._splits():
            spec = split_files(src, split)
            for subject in src.data.subjects:
                _require_bdata(bdata_path(src, subject, split))
            _require_image_list(src.root / spec.image_list)
            _require_folder(src.root / spec.images)
        for split in self._splits():
            used: set[str] = set()
            for subject in src.data.subjects:
                for roi in src.data.rois:
                    names = set(self.load(subject, split, roi, average=False).names)
                    if split == "train":
                        check_folds(cv_folds, len(names), subject)
                    used |= names
            check_images_readable(self._folder(split), [n for n in self.names(split) if n in used])

    def names(self, split: str) -> list[str]:
        mapping = read_image_list(self.src.root / split_files(self.src, split).image_list)
        return [mapping[i] for i in sorted(mapping)]

    def load(self, subject: str, split: str, roi: str, average: bool) -> SplitData:
        src = self.src
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
            raise UserError(f"{path} has non-integer or missing 'image_index' values; it must hold 1-based image "
                            f"indices")
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

    def stimuli(self, split: str, names: list[str] | np.ndarray, size: int) -> np.ndarray:
        return load_images(self._folder(split), names, size)

    def stimuli_file(self, split: str, names: list[str]) -> Path:
        folder = self._folder(split)
        image_paths(folder, names)  # fail early, naming the first missing image
        return folder

    def native_size(self) -> int | None:
        from PIL import Image

        sizes = set()
        for split in self.src.data.test:
            for path in image_paths(self._folder(split), self.names(split)):
                with Image.open(path) as im:
                    sizes.add(im.size)
                if len(sizes) > 1:
                    return None
        (w, h), = sizes
        return int(h) if h == w else None

    def seen_in_training(self, split: str) -> list[str]:
        """Test stimuli whose image file is byte for byte a training stimulus' file."""
        train = set(_digests(image_paths(self._folder("train"), self.names("train"))))
        names = self.names(split)
        return [n for n, d in zip(names, _digests(image_paths(self._folder(split), names))) if d in train]


def _digests(paths: list[Path]) -> list[str]:
    return _file_digests(tuple((p, p.stat().st_mtime_ns) for p in paths))


@functools.lru_cache(maxsize=4)  # the training folder is hashed once per process, not once per test split
def _file_digests(files: tuple[tuple[Path, int], ...]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in files]
