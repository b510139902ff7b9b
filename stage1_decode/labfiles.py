"""Convert between the feature store and the Kamitani lab's per-image ``.mat`` feature files.

The lab layout, as the lab's feature-extraction and feature-decoding code writes it
(``bdpy.dataform.save_array``) and reads it (``bdpy.dataform.Features`` on
``<root>/<network>``, ``bdpy.dataform.DecodedFeatures`` on the same folder)::

    <root>/<network>/<layer>/<image>.mat                    true features
    <root>/<network>/<layer>/<subject>/<roi>/<image>.mat    decoded features

Each file holds one image's features under the key ``feat``: float32 of shape
``(1, *unit_shape)``, i.e. ``(1, C, H, W)`` for a conv layer and ``(1, n)`` for an fc
layer, as a MATLAB v7.3 (HDF5) file. A store array is ``(n_images, prod(unit_shape))``
float32 with rows in image-list order; one row is the C-order flattening of one file's
array, so the two convert by ``reshape`` alone.

``export_lab`` streams store arrays into files (row blocks; each file written under a
temporary name, then renamed). ``import_lab`` reads the files of the images named by
each split's image list, checks that all are present and that their shapes agree, and
writes store arrays through the store's atomic writer. ``export_lab_verb`` and
``import_lab_verb`` are the stage-1 verbs ``export-lab`` and ``import-lab`` (lab folder:
``lab.root``; what to import: ``lab.import_kind``, ``true_features`` or ``decoded``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.datasets import DataSource, split_image_names
from shared.errors import UserError
from shared.holdout import VALIDATION
from shared.store import IMPORTED_FROM, ExperimentStore, FeatureArray, StoreMismatch
from shared.weights import parse_weights

log = logging.getLogger(__name__)

KEY = "feat"  # the variable name of every lab feature file
OOF_SPLIT = "train_oof"  # out-of-fold decoded features of the training images
KINDS = ("true", "decoded")
BLOCK_BYTES = 64 * 1024**2  # rows read or written at once: about this many bytes of float32


# ------------------------------------------------------------------------ one file


def lab_file(root: Path, network: str, layer: str, image: str, subject: str | None = None,
             roi: str | None = None) -> Path:
    """Where the lab layout keeps one image's true (no subject/roi) or decoded features."""
    folder = Path(root) / network / layer
    if subject is not None:
        folder = folder / subject / roi
    return folder / f"{image}.mat"


def write_feat(path: Path, feat: np.ndarray) -> None:
    """Write ``feat`` ``(1, *unit_shape)`` as the lab does (bdpy ``save_array``, key ``feat``,
    float32), to a temporary name first so a reader never sees half a file."""
    from bdpy.dataform import save_array

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # hdf5storage appends '.mat' to a name without it; the leading dot hides the file from
    # bdpy's readers (they glob '*.mat') until it is renamed
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.mat")
    tmp.unlink(missing_ok=True)
    try:
        save_array(str(tmp), feat, key=KEY, dtype=np.float32, sparse=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_feat(path: Path) -> np.ndarray:
    """The ``feat`` array of one lab file, as stored (``(1, *unit_shape)``, any float dtype).

    MATLAB v7.3 (HDF5) files, which bdpy writes, are read with bdpy's ``load_array``;
    older MAT files (scipy or MATLAB ``-v7``) with ``scipy.io.loadmat``, as bdpy's
    ``Features`` falls back to.
    """
    import h5py
    import scipy.io
    from bdpy.dataform import load_array

    try:
        if h5py.is_hdf5(path):
            return np.asarray(load_array(str(path), key=KEY))
        return np.asarray(scipy.io.loadmat(str(path), variable_names=[KEY])[KEY])
    except (OSError, KeyError, ValueError, TypeError, NotImplementedError) as exc:
        raise UserError(f"lab feature file {path} cannot be read as a MAT file holding a '{KEY}' array "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"replace the file") from None


def _rows_per_block(n_units: int) -> int:
    return max(1, BLOCK_BYTES // (4 * max(n_units, 1)))


# -------------------------------------------------------------------------- export


@dataclass
class _ExportJob:
    """One store array and the lab folder its images go to."""

    store_path: Path
    expect: dict
    folder: Path
    split: str


def export_lab(cfg, root: str | Path, splits: list[str] | None = None) -> int:
    """Write the store's features of ``splits`` into the lab layout under ``root``.

    ``splits`` (default: ``train``, every test split, ``validation`` and ``train_oof``) name store
    splits: true features of ``train`` and of test splits (they must be in the store), decoded
    features of every (subject, roi, layer) for test splits, the validation hold-out and
    ``train_oof`` that the store holds. Returns the number of files written; existing files are replaced.
    """
    store = ExperimentStore(cfg)
    root = Path(root)
    network, layers = cfg.features.network, cfg.features.layers
    tests = list(cfg.data.test)
    known = ["train", *tests, VALIDATION, OOF_SPLIT]
    splits = known if splits is None else list(splits)
    for split in splits:
        if split not in known:
            raise UserError(f"cannot export split {split!r}; splits must be among {known}")
    jobs: list[_ExportJob] = []
    for layer in layers:
        for split in splits:
            if split not in (OOF_SPLIT, VALIDATION):  # decoded only (their true features are train's rows)
                jobs.append(_ExportJob(store.true_file(layer, split), store.true_expect(layer, split),
                                       root / network / layer, split))
        for subject in cfg.data.subjects:
            for roi in cfg.data.rois:
                for split in splits:
                    if split == "train":
                        continue
                    path = store.decoded_file(subject, roi, layer, split)
                    if path.is_file():
                        jobs.append(_ExportJob(path, store.decoded_expect(subject, roi, layer, split),
                                               root / network / layer / subject / roi, split))
                    else:
                        log.debug("no decoded %s features of %s %s %s in the store", split, subject, roi, layer)
    total = _check_unique_names(store, jobs)
    return _write_jobs(store, jobs, total)


def _check_unique_names(store: ExperimentStore, jobs: list[_ExportJob]) -> int:
    """Refuse to put two splits' images of the same name into one lab folder; return the
    number of images (files) to write."""
    seen: dict[Path, dict[str, str]] = {}  # folder -> stimulus name -> split
    total = 0
    for job in jobs:
        with store.open(job.store_path, job.expect) as arr:
            names = arr.names
        total += len(names)
        in_folder = seen.setdefault(job.folder, {})
        for name in names:
            other = in_folder.setdefault(str(name), job.split)
            if other != job.split:
                raise UserError(
                    f"cannot export to the lab layout: stimulus {str(name)!r} is in split {other!r} and in split "
                    f"{job.split!r}, whose files share the folder {job.folder}; stimulus names must be unique "
                    f"across the splits exported together (rename one in its image list)")
    return total


def _write_jobs(store: ExperimentStore, jobs: list[_ExportJob], total: int) -> int:
    from tqdm import tqdm

    with tqdm(total=total, desc="export lab files", unit="image") as bar:
        for job in jobs:
            with store.open(job.store_path, job.expect) as arr:
                _export_array(arr, job.folder, bar)
    n_decoded = sum(job.expect["kind"] == "decoded" for job in jobs)
    log.info("exported %d lab feature files from %d store arrays (%d of them decoded)", total, len(jobs), n_decoded)
    return total


def _export_array(arr: FeatureArray, folder: Path, bar) -> None:
    """Every row of ``arr`` as ``<folder>/<name>.mat`` holding ``(1, *unit_shape)``."""
    unit_shape = arr.unit_shape
    if int(np.prod(unit_shape)) != arr.n_units:
        raise StoreMismatch(f"feature store file {arr.path} has {arr.n_units} units but unit_shape {unit_shape}; "
                            f"delete it and rerun stage 1")
    n_rows = arr.shape[0]
    step = _rows_per_block(arr.n_units)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        block = arr.read(rows=np.arange(start, stop))
        for name, row in zip(arr.names[start:stop], block):
            write_feat(folder / f"{name}.mat", row.reshape(1, *unit_shape))
            bar.update(1)


# -------------------------------------------------------------------------- import


@dataclass
class _ImportJob:
    """One store array to write from the lab files of ``names`` (in that row order)."""

    target: Path
    attrs: dict  # store attributes except unit_shape
    layer: str
    names: list[str]
    files: list[Path]
    what: str  # 'true ... features of split ...', for messages


def import_lab(cfg, root: str | Path, what: str) -> list[Path]:
    """Read the lab's ``what`` ('true' or 'decoded') feature files under ``root`` into the store.

    true: every layer x split (``train`` and every test split); decoded: every subject x
    roi x layer x test split. Rows are the images of the split's image list, in its order;
    every file must be present. Returns the store files written (existing ones replaced).
    """
    if what not in KINDS:
        raise UserError(f"what to import must be one of {list(KINDS)}; {what!r} was given")
    store = ExperimentStore(cfg)
    root = Path(root)
    network = cfg.features.network
    label = f"{parse_weights(cfg.features.weights).label}; imported from lab files in {root}"
    provenance = {IMPORTED_FROM: str(root)}
    tests = list(cfg.data.test)
    src = DataSource.of(cfg)
    names = {split: split_image_names(src, split) for split in (["train", *tests] if what == "true" else tests)}
    jobs: list[_ImportJob] = []
    for layer in cfg.features.layers:
        if what == "true":
            for split, split_names in names.items():
                jobs.append(_ImportJob(
                    store.true_file(layer, split),
                    {**store.true_expect(layer, split), "weights_label": label, "provenance": provenance},
                    layer, split_names, [lab_file(root, network, layer, n) for n in split_names],
                    f"true {layer} features of split {split}"))
            continue
        for subject in cfg.data.subjects:
            for roi in cfg.data.rois:
                for split, split_names in names.items():
                    jobs.append(_ImportJob(
                        store.decoded_file(subject, roi, layer, split),
                        {**store.decoded_expect(subject, roi, layer, split), "weights_label": label,
                         "provenance": provenance},
                        layer, split_names, [lab_file(root, network, layer, n, subject, roi) for n in split_names],
                        f"decoded {layer} features of {subject} {roi}, split {split}"))
    _require_files(jobs, root, network)
    shapes = _reference_shapes(store, jobs, cfg.features.layers, cfg.data.subjects, cfg.data.rois, tests)
    return _read_jobs(store, jobs, shapes)


def _require_files(jobs: list[_ImportJob], root: Path, network: str) -> None:
    """Fail before any work with one line naming the first missing folder or file."""
    listed: dict[Path, set[str]] = {}
    for job in jobs:
        for name, path in zip(job.names, job.files):
            folder = path.parent
            if folder not in listed:
                if not folder.is_dir():
                    raise UserError(
                        f"lab feature folder {folder} not found ({job.what}); the lab layout under {root} is "
                        f"{network}/<layer>/<image>.mat (true) or {network}/<layer>/<subject>/<roi>/<image>.mat "
                        f"(decoded): put the files there or point lab.root at the folder above {network}/")
                listed[folder] = set(os.listdir(folder))
            if path.name not in listed[folder]:
                raise UserError(f"lab feature file {path} not found ({job.what}, stimulus {name!r} of the image "
                                f"list); put the file there")


def _reference_shapes(store: ExperimentStore, jobs: list[_ImportJob], layers: list[str], subjects: list[str],
                      rois: list[str], tests: list[str]) -> dict[str, tuple]:
    """``{layer: (unit_shape, store file)}`` from a store array this import does not replace.

    Stage 2 pairs decoded features with the true features of the same layer, so imported
    files must have the shape of the arrays already there (true ones first).
    """
    targets = {job.target for job in jobs}
    out: dict[str, tuple] = {}
    for layer in layers:
        candidates = [(store.true_file(layer, s), store.true_expect(layer, s)) for s in ["train", *tests]]
        candidates += [(store.decoded_file(sub, roi, layer, s), store.decoded_expect(sub, roi, layer, s))
                       for sub in subjects for roi in rois for s in tests]
        for path, expect in candidates:
            if path in targets or not path.is_file():
                continue
            try:
                with store.open(path, expect) as arr:
                    out[layer] = (arr.unit_shape, path)
                break
            except StoreMismatch:  # another config's array: no reference
                continue
    return out


def _read_jobs(store: ExperimentStore, jobs: list[_ImportJob], shapes: dict[str, tuple]) -> list[Path]:
    from tqdm import tqdm

    first: dict[str, tuple[tuple, Path]] = {}  # layer -> (unit shape, the file it was read from)
    written = []
    with tqdm(total=sum(len(j.names) for j in jobs), desc="import lab files", unit="image") as bar:
        for job in jobs:
            head = read_feat(job.files[0])  # the writer needs the number of units
            first.setdefault(job.layer, (tuple(head.shape[1:]), job.files[0]))
            _check_shape(job.layer, job.files[0], head, first[job.layer], shapes.get(job.layer))
            unit_shape = first[job.layer][0]
            n_units = int(np.prod(unit_shape))
            if job.target.is_file():
                log.info("replacing %s with the lab's files", job.target)
            step = _rows_per_block(n_units)
            with store.writer(job.target, job.names, n_units, {**job.attrs, "unit_shape": list(unit_shape)}) as w:
                for start in range(0, len(job.files), step):
                    paths = job.files[start:start + step]
                    block = np.empty((len(paths), n_units), dtype=np.float32)
                    for i, path in enumerate(paths):
                        feat = head if start + i == 0 else read_feat(path)
                        if start + i > 0:
                            _check_shape(job.layer, path, feat, first[job.layer], shapes.get(job.layer))
                        block[i] = feat.reshape(-1)
                        bar.update(1)
                    w.write_rows(start, block)
            written.append(job.target)
            log.info("imported %s: %d images from %s", job.what, len(job.names), job.files[0].parent)
    return written


def _check_shape(layer: str, path: Path, feat: np.ndarray, first: tuple, reference: tuple | None) -> None:
    """``feat`` must be ``(1, *unit_shape)`` like the layer's first file and the store's arrays."""
    shape = tuple(feat.shape)
    if feat.ndim < 2 or shape[0] != 1:
        raise UserError(f"lab feature file {path} holds '{KEY}' of shape {shape}; the lab layout has one image per "
                        f"file, shape (1, *unit_shape), e.g. (1, C, H, W) or (1, n)")
    if shape[1:] != first[0]:
        raise UserError(f"lab feature file {path} holds {layer} features of shape {shape[1:]} but "
                        f"{first[1]} holds {first[0]}; every image of a layer must have the same shape")
    if reference is not None and shape[1:] != tuple(reference[0]):
        raise UserError(f"lab feature file {path} holds {layer} features of shape {shape[1:]} but the feature "
                        f"store's {layer} array {reference[1]} has {tuple(reference[0])}; the lab files come from "
                        f"another network or input size than features.network / features.input_size")


# --------------------------------------------------------------------------- verbs

# lab.import_kind -> what import_lab reads; 'true' alone would be read as a YAML boolean
IMPORT_KINDS = {"true_features": "true", "decoded": "decoded"}


def _lab_root(cfg) -> Path:
    root = cfg.lab.root
    if not root:
        raise UserError("'lab.root' is empty; give the folder that holds the lab's <network>/<layer>/... feature "
                        "files, e.g. --set lab.root=data/lab_features")
    return Path(root)


def export_lab_verb(cfg) -> None:
    """``export-lab``: the store's true and decoded features as lab files under ``lab.root``."""
    from shared.runs import Run

    root = _lab_root(cfg)
    with Run(cfg, "export-lab", "cpu") as run_:  # its lock and log handler released if it fails
        n = export_lab(cfg, root)
        run_.finish(lab_root=str(root), files=n)
    log.info("lab feature files in %s", root / cfg.features.network)


def import_lab_verb(cfg) -> None:
    """``import-lab``: the lab's true or decoded feature files under ``lab.root`` into the store."""
    from shared.runs import Run

    kind = cfg.lab.import_kind
    if kind not in IMPORT_KINDS:
        raise UserError(f"'lab.import_kind' must be one of {list(IMPORT_KINDS)}; {kind!r} was given")
    root = _lab_root(cfg)
    if not (root / cfg.features.network).is_dir():  # the common mistake, caught before a run directory is made
        raise UserError(f"lab feature folder {root / cfg.features.network} not found; 'lab.root' must hold a folder "
                        f"named after features.network ({cfg.features.network}) with the lab's <layer>/... files")
    with Run(cfg, "import-lab", "cpu") as run_:
        written = import_lab(cfg, root, IMPORT_KINDS[kind])
        run_.finish(lab_root=str(root), import_kind=kind, store_files=[str(p) for p in written])
    log.info("imported %d %s feature arrays into %s", len(written), IMPORT_KINDS[kind], ExperimentStore(cfg).root)
