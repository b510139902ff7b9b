"""Every reconstruction on disk, so users can score them with their own tools.

Per subject, ROI, test set and method::

    <results>/reconstructions/<subject>/<roi>/<split>/<method>.h5         images + names
    <results>/reconstructions/<subject>/<roi>/<split>/<method>/<name>.png  one per stimulus
    <results>/reconstructions/stimuli/<split>.h5 (and <split>/<name>.png)   the stimuli as scored

The HDF5 file holds ``images`` (float32, ``(n, C, S, S)`` in [0, 1], C = 1 for a
grayscale stimulus set) exactly as scored, and ``names`` (the stimulus of each row).
PNGs are 8-bit (grayscale or RGB). The HDF5 file and the PNG folder are each written
under a temporary name and renamed into place, so neither is ever half-written (a crash
between the two renames can leave a new HDF5 file beside the previous PNGs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from shared.report import named_test_images
from shared.runs import tmp_path


def method_paths(folder: Path, method: str) -> tuple[Path, Path]:
    """``(<method>.h5, <method>/)`` inside ``folder``."""
    safe = method.replace("[", "_").replace("]", "").replace("/", "_")
    return folder / f"{safe}.h5", folder / safe


def save_reconstructions(folder: Path, method: str, images: np.ndarray, names: list[str], grayscale: bool) -> None:
    """Write ``images`` ``(n, 3, S, S)`` (RGB; channel 0 only when ``grayscale``) named after ``names``."""
    import h5py
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    h5_path, png_dir = method_paths(folder, method)
    arr = np.ascontiguousarray(images[:, :1] if grayscale else images, dtype=np.float32)
    tmp_h5 = tmp_path(h5_path)
    with h5py.File(tmp_h5, "w") as f:
        f.create_dataset("images", data=arr)
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f.attrs["method"] = method
        f.attrs["layout"] = "(n, channels, height, width) float32 in [0, 1]"
    tmp_dir = tmp_path(png_dir)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    pixels = np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    for name, img in zip(names, pixels):
        stem = str(name).replace("/", "_").replace(os.sep, "_")
        if grayscale:
            Image.fromarray(img[0], mode="L").save(tmp_dir / f"{stem}.png")
        else:
            Image.fromarray(img.transpose(1, 2, 0), mode="RGB").save(tmp_dir / f"{stem}.png")
    os.replace(tmp_h5, h5_path)
    if png_dir.exists():
        shutil.rmtree(png_dir)
    os.replace(tmp_dir, png_dir)


def read_reconstructions(h5_path: Path) -> tuple[np.ndarray, list[str]]:
    """``(images (n, C, S, S) float32, names)`` from a ``<method>.h5`` file."""
    import h5py

    with h5py.File(h5_path, "r") as f:
        return f["images"][:], [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][:]]


def split_method_key(key: str, first_roi: str) -> tuple[str, str]:
    """``("wgan_gp", "LVC")`` from a ``metrics.json`` method key ``"wgan_gp[LVC]"``; a key without the
    suffix belongs to the first ROI. Files on disk are named by the method alone, in the ROI's folder."""
    if key.endswith("]") and "[" in key:
        method, roi = key[:-1].split("[", 1)
        return method, roi
    return key, first_roi


def to_rgb(images: np.ndarray) -> np.ndarray:
    """``(n, 3, S, S)`` from saved ``(n, 1 or 3, S, S)`` images (gray repeated)."""
    return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


def read_stimuli(results: Path, split: str) -> tuple[np.ndarray, list[str]]:
    """The stimuli stage 2 scored against, ``(n, 3, S, S)`` and names, from ``<results>/reconstructions``."""
    from shared.errors import UserError

    h5, _ = method_paths(Path(results) / "reconstructions" / "stimuli", split)
    if not h5.is_file():
        raise UserError(f"{h5} is missing (results of a stage 2 older than this release); rerun stage 2 to save "
                        f"the stimuli")
    images, names = read_reconstructions(h5)
    return to_rgb(images), names


def grid_title(cfg, subject: str, roi: str, split: str) -> str:
    """The title of a reconstruction grid (stage 2's and export's alike)."""
    from shared.weights import parse_weights

    return (f"{subject} {roi}, {named_test_images(split)}; features {cfg.features.network} "
            f"[{parse_weights(cfg.features.weights).label}]")
