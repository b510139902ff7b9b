"""The feature store: the one way stage 1 hands arrays to stage 2.

One HDF5 file per array, laid out as::

    <root>/true/<network>-<weights>/<layer>/<split>.h5
    <root>/decoded/<network>-<weights>/<decoder>/<subject>/<roi>/<layer>/<split>.h5

Each file holds ``features`` ``(n_rows, n_units)`` (float32, chunked over rows and
units, so a chunk of units can be read across all rows without loading the layer),
``names`` (the stimulus name of every row) and attributes: ``kind``, ``network``,
``weights``, ``layer``, ``unit_shape``, ``split`` (and ``subject``, ``roi``,
``decoder`` for decoded arrays) plus a JSON ``provenance``. Files are written to a
temporary name and renamed when complete, so a reader never sees half an array and a
finished file marks a finished step (runs resume by skipping existing files).
Opening checks the attributes and stimulus names against what the caller expects and
refuses a mismatch with a ``StoreMismatch`` (a ``UserError``).

A layer decoded in pieces (ranges of its units, by several processes) is stored as one part
file per range (``<split>.part-<k>of<n>.h5``) and ``<split>.h5`` is an HDF5 virtual dataset
over them: readers see the one array, and nothing is copied.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from shared.errors import UserError
from shared.runs import tmp_path

ROW_CHUNK = 16  # feature extraction writes batches of rows
UNIT_CHUNK = 4096
CACHE_BYTES = 64 * 1024**2


class StoreMismatch(UserError):
    """The store holds something other than what the caller asked for."""


class FeatureArray:
    """A lazily read feature array; use as a context manager or call ``close()``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=CACHE_BYTES)
            self._data = self._file["features"]
        except (OSError, KeyError) as exc:
            raise StoreMismatch(f"feature store file {self.path} cannot be read ({exc}); delete it and rerun "
                                f"stage 1") from None
        if self._data.is_virtual:  # a missing part would read as the fill value: refuse instead
            for source in self._data.virtual_sources():
                part = self.path.parent / source.file_name
                if not part.is_file():
                    self._file.close()
                    raise StoreMismatch(f"feature store file {self.path} is stitched from parts and its part {part} "
                                        f"is missing; rerun stage 1 to decode that layer again")
        self.names = np.array([n.decode() if isinstance(n, bytes) else n for n in self._file["names"][()]])
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._data.attrs.items()}

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._data.shape)

    @property
    def n_units(self) -> int:
        return self._data.shape[1]

    @property
    def unit_shape(self) -> tuple[int, ...]:
        return tuple(int(u) for u in self.attrs["unit_shape"])

    def read(self, rows=None, units: slice = slice(None)) -> np.ndarray:
        """``(n_rows, n_units)`` float32; ``rows`` an index array (any order) or None for all."""
        if rows is None:
            return self._data[:, units]
        rows = np.asarray(rows)
        order = np.argsort(rows)
        block = self._data[np.sort(rows), units]  # h5py needs increasing indices
        out = np.empty_like(block)
        out[order] = block
        return out

    def iter_units(self, chunk: int, units: slice | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(unit slice, (n_rows, chunk) array)`` over the whole layer (or over ``units``)."""
        first, stop = (0, self.n_units) if units is None else (units.start, min(units.stop, self.n_units))
        for start in range(first, stop, chunk):
            sl = slice(start, min(start + chunk, stop))
            yield sl, self._data[:, sl]

    def rows_for(self, names) -> np.ndarray:
        """Row index of each requested stimulus name; a missing name is a ``StoreMismatch``."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise StoreMismatch(
                f"feature store file {self.path} has no row for stimulus {missing[0]!r} "
                f"({len(missing)} missing); rerun stage 1 for this experiment"
            )
        return np.array([index[n] for n in names])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FeatureArray:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayWriter:
    """Writes one array into a temporary file and renames it into place on ``commit``."""

    def __init__(self, path: Path, names, n_units: int, attrs: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path(self.path)
        self._file = h5py.File(self.tmp, "w", rdcc_nbytes=CACHE_BYTES)
        n_rows = len(names)
        self._data = self._file.create_dataset(
            "features", shape=(n_rows, n_units), dtype="float32",
            chunks=(max(1, min(n_rows, ROW_CHUNK)), max(1, min(n_units, UNIT_CHUNK))),
        )
        self._file.create_dataset("names", data=np.array([str(n) for n in names], dtype=h5py.string_dtype()))
        for key, value in attrs.items():
            self._data.attrs[key] = json.dumps(value) if isinstance(value, dict) else value

    def write_rows(self, start: int, block: np.ndarray) -> None:
        self._data[start:start + len(block)] = block

    def write_units(self, units: slice, block: np.ndarray) -> None:
        self._data[:, units] = block

    def commit(self) -> Path:
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_stitched(path: Path, parts: list[tuple[Path, slice]]) -> Path:
    """Write ``path`` as one virtual array over ``parts`` (part files in ``path``'s folder, each holding the
    units ``slice`` of every row, in order), with the first part's names and attributes; atomically."""
    path = Path(path)
    with h5py.File(parts[0][0], "r") as first:
        names = first["names"][()]
        attrs = dict(first["features"].attrs)
        n_rows = first["features"].shape[0]
    n_units = parts[-1][1].stop
    layout = h5py.VirtualLayout(shape=(n_rows, n_units), dtype="float32")
    for part, units in parts:
        assert part.parent == path.parent, "parts live beside the stitched file"
        layout[:, units] = h5py.VirtualSource(part.name, "features", shape=(n_rows, units.stop - units.start))
    tmp = tmp_path(path)
    try:
        with h5py.File(tmp, "w") as fh:  # sources named relative to this file: the folder may move
            data = fh.create_virtual_dataset("features", layout, fillvalue=np.nan)
            for key, value in attrs.items():
                data.attrs[key] = value
            fh.create_dataset("names", data=names, dtype=h5py.string_dtype())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


class FeatureStore:
    """Paths, writers and checked readers of the feature arrays of one experiment."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def _net(network: str, weights_slug: str) -> str:
        return f"{network}-{weights_slug}"

    def true_path(self, network: str, weights_slug: str, layer: str, split: str) -> Path:
        return self.root / "true" / self._net(network, weights_slug) / layer / f"{split}.h5"

    def decoded_path(self, network: str, weights_slug: str, decoder: str, subject: str, roi: str,
                     layer: str, split: str) -> Path:
        return self.decoded_dir(network, weights_slug, decoder, subject, roi) / layer / f"{split}.h5"

    def decoded_dir(self, network: str, weights_slug: str, decoder: str, subject: str, roi: str) -> Path:
        """The folder of one subject and ROI's decoded layers."""
        return self.root / "decoded" / self._net(network, weights_slug) / decoder / subject / roi

    def writer(self, path: Path, names, n_units: int, attrs: dict) -> ArrayWriter:
        required = {"kind", "network", "weights", "layer", "split", "unit_shape"}
        missing = required - set(attrs)
        assert not missing, f"store attributes missing: {missing}"
        return ArrayWriter(path, names, n_units, attrs)

    def open(self, path: Path, expect: dict, names=None) -> FeatureArray:
        """Open ``path`` and check that its attributes equal ``expect`` (and hold ``names``)."""
        if not Path(path).is_file():
            what = ", ".join(f"{k}={v}" for k, v in expect.items())
            raise StoreMismatch(f"feature store has no array at {path} ({what}){_nearest(Path(path), self.root)}; "
                                f"if stage 1 has not run on this config, run it first "
                                f"(python -m stage1_decode run --config ...)")
        arr = FeatureArray(path)
        for key, want in expect.items():
            have = arr.attrs.get(key)
            if isinstance(have, (np.ndarray, np.generic)):
                have = have.tolist()
            if isinstance(want, tuple):
                want = list(want)
            if have != want:
                arr.close()
                raise StoreMismatch(
                    f"feature store file {path} holds {key}={have!r} but {key}={want!r} was asked; "
                    f"rerun stage 1 with the same features config, or point work_dir elsewhere"
                )
        if names is not None and list(arr.names) != [str(n) for n in names]:
            arr.close()
            arr.rows_for(names)  # names the first missing stimulus, if any
            raise StoreMismatch(f"feature store file {path} lists its stimuli in another order than "
                                f"the data; rerun stage 1 to rebuild it")
        return arr


def _nearest(path: Path, root: Path) -> str:
    """What the store does hold where ``path`` is missing: the entries of its nearest existing folder within
    ``root`` (e.g. the ROIs there are, or the splits of a layer), for a wrong subject, ROI, layer or split name."""
    folder = path.parent
    while not folder.is_dir() and folder != root and root in folder.parents:
        folder = folder.parent
    if not folder.is_dir():
        return ""
    entries = sorted(p.stem if p.suffix == ".h5" else p.name for p in folder.iterdir() if not p.name.startswith("."))
    held = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "")
    return f"; {folder} holds {held or 'nothing'}: check the subject, ROI, layer and split names" if entries else ""


# ------------------------------------------------------------ the experiment's arrays

ACTIVATION = "pre-relu"  # what a layer's features are: the conv/linear output before its ReLU
IMPORTED_FROM = "imported_from"  # the provenance key of arrays read from the lab's files: the folder they came from


class ExperimentStore(FeatureStore):
    """The store of one experiment config: paths and expected attributes come from it."""

    def __init__(self, cfg):
        from shared.weights import parse_weights

        super().__init__(cfg.work_path / "features")
        self.cfg = cfg
        self.slug = parse_weights(cfg.features.weights).slug

    def true_expect(self, layer: str, split: str) -> dict:
        f = self.cfg.features
        return {"kind": "true", "network": f.network, "weights": f.weights, "layer": layer, "split": split,
                "input_size": f.input_size, "activation": ACTIVATION}

    def decoded_expect(self, subject: str, roi: str, layer: str, split: str) -> dict:
        return {**self.true_expect(layer, split), "kind": "decoded", "subject": subject, "roi": roi,
                "decoder": self.cfg.decoder.label}

    def true_file(self, layer: str, split: str) -> Path:
        return self.true_path(self.cfg.features.network, self.slug, layer, split)

    def decoded_file(self, subject: str, roi: str, layer: str, split: str) -> Path:
        return self.decoded_path(self.cfg.features.network, self.slug, self.cfg.decoder.label, subject, roi, layer,
                                 split)

    def decoder_dir(self) -> Path:
        """The folder of every subject and ROI this config's decoder decodes (what stage-1 processes split)."""
        return self.root / "decoded" / self._net(self.cfg.features.network, self.slug) / self.cfg.decoder.label

    def roi_dir(self, subject: str, roi: str) -> Path:
        """The folder of one subject and ROI's decoded layers (and ``data.json``, what its data hold)."""
        return self.decoded_dir(self.cfg.features.network, self.slug, self.cfg.decoder.label, subject, roi)

    def layer_dir(self, subject: str, roi: str, layer: str) -> Path:
        """The folder of one decoded layer (its splits' arrays, parts, markers and claims)."""
        return self.roi_dir(subject, roi) / layer

    def open_true(self, layer: str, split: str, names=None) -> FeatureArray:
        return self.open(self.true_file(layer, split), self.true_expect(layer, split), names=names)

    def open_decoded(self, subject: str, roi: str, layer: str, split: str) -> FeatureArray:
        return self.open(self.decoded_file(subject, roi, layer, split), self.decoded_expect(subject, roi, layer, split))
