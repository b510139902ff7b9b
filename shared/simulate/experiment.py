"""Write a complete simulated experiment in the real Deep Image Reconstruction formats,
or as one matrix file per subject like the small public sets.

Stimuli (``simulation.stimuli``, see ``stimuli.PRESETS``): the training images and the
``natural`` (or ``test``) test images come from the preset's generator, test images distinct
from training ones; ``artificial`` and ``letter`` are the real study's fixed test sets. Trials:
``n_train_images x n_train_reps`` (each repetition a run, in shuffled order) or, with
``simulation.n_train_trials``, every image once plus seeded random repeats.

Output under ``data.root`` with ``simulation.format: bdata`` (file names from the config,
defaults as in the real set):

* ``sub-01_perceptionNaturalImageTraining_original_VC.h5`` and the test files: bdpy
  BData with ``VoxelData`` columns flagged by ``ROI_V1 ... ROI_VC`` masks, voxel
  coordinates, and the ``image_index`` and ``Run`` columns, one row per trial;
* ``image_list_*.tsv``: ``<image file stem>\\t<1-based index>`` per line;
* ``images/<split>/<stem>.png``: the stimuli.

With ``simulation.format: matrix``, instead, one MATLAB v5 file per subject at
``data.matrix.file``: the variables ``data.matrix.train_voxels`` / ``test_voxels`` (trials x
voxels, float64, every VC voxel) and ``train_images`` / ``test_images`` (trials x H*W uint8,
each trial's stimulus flattened column-major as MATLAB stores it; x 3 channels for colour
stimuli), one row per trial, so repeated stimuli repeat rows. The trial order is the same
in every subject's file. Both formats end with:

* ``simulation.json``: the settings, written last; a rerun with the same settings
  does nothing, one with other settings is refused.

The whole experiment is built in a temporary folder and moved into place at the end,
so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.config import Config, SimulationConfig
from shared.errors import UserError
from shared.runs import tmp_path
from shared.simulate import brain as brain_mod
from shared.simulate import stimuli

log = logging.getLogger(__name__)

SPLIT_KINDS = ("natural", "artificial", "letter", "test")  # 'test': the matrix format's one test split
PRESET_SPLITS = ("natural", "test")  # test splits drawn from simulation.stimuli's generator
ROI_MASKS = {
    "ROI_V1": ("V1",), "ROI_V2": ("V2",), "ROI_V3": ("V3",), "ROI_V4": ("V4",),
    "ROI_LOC": ("LOC",), "ROI_FFA": ("FFA",), "ROI_PPA": ("PPA",),
    "ROI_LVC": ("V1", "V2", "V3"), "ROI_HVC": ("LOC", "FFA", "PPA"),
    "ROI_VC": ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "other"),
}


def _marker(cfg: Config) -> dict:
    marker = {
        "simulation": asdict(cfg.simulation),
        "subjects": list(cfg.data.subjects),
        "train": asdict(cfg.data.train),
        "test": {k: asdict(v) for k, v in cfg.data.test.items()},
    }
    if cfg.simulation.format == "matrix":
        marker["matrix"] = asdict(cfg.data.matrix)
    return marker


def _with_defaults(marker: dict) -> dict:
    """A marker written before a simulation field existed, read with that field at its default
    (then the experiment was simulated as the default does now)."""
    return {**marker, "simulation": {**asdict(SimulationConfig()), **marker.get("simulation", {})}}


def _distinct(preset: str, rng: np.random.Generator, size: int, n: int, stems: str, seen: set[bytes],
              key: str) -> list[tuple[str, np.ndarray]]:
    """``n`` images of the ``preset`` generator named ``stems.format(i)``, none equal (as 8-bit images)
    to another or to one in ``seen`` (which gains them). ``key`` is the config key asking for ``n``."""
    draw = stimuli.PRESETS[preset]
    out: list[tuple[str, np.ndarray]] = []
    tries = 0
    while len(out) < n:
        img = draw(rng, size)
        pixels = np.round(img * 255).astype(np.uint8).tobytes()
        tries += 1
        if pixels in seen:
            if tries > 20 * n + 1000:
                raise UserError(f"'simulation.{key}' ({n}) asks for more distinct images than simulation.stimuli "
                                f"'{preset}' gives at this image size; lower it")
            continue
        seen.add(pixels)
        out.append((stems.format(len(out) + 1), img))
    return out


def _stimulus_sets(cfg: Config) -> dict[str, list[tuple[str, np.ndarray]]]:
    sim = cfg.simulation
    size = sim.image_size
    rng_train = np.random.default_rng([sim.seed, 1])
    rng_test = np.random.default_rng([sim.seed, 2])
    seen: set[bytes] = set()
    sets = {"train": _distinct(sim.stimuli, rng_train, size, sim.n_train_images, "sim_train_{:04d}", seen,
                               "n_train_images")}
    for name, spec in cfg.data.test.items():
        if name in PRESET_SPLITS:
            sets[name] = _distinct(sim.stimuli, rng_test, size, sim.n_test_natural, "sim_test_{:03d}", seen,
                                   "n_test_natural")
        elif name == "artificial":
            sets[name] = stimuli.artificial_set(size, sim.n_test_artificial)
        elif name == "letter":
            sets[name] = stimuli.letter_set(size, sim.n_test_letter)
        else:
            raise UserError(
                f"'data.test' entry {name!r} cannot be simulated; simulated test sets are {list(SPLIT_KINDS)}"
            )
    return sets


def _reps(cfg: Config, split: str) -> int:
    sim = cfg.simulation
    return {"train": sim.n_train_reps, "natural": sim.n_test_natural_reps, "test": sim.n_test_natural_reps,
            "artificial": sim.n_test_artificial_reps, "letter": sim.n_test_letter_reps}[split]


def _trials(cfg: Config, split: str, n_img: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image (0-based position in the split) and the run number of each trial, in presentation order:
    each repetition a run of every image in shuffled order, or (training, ``simulation.n_train_trials``)
    every image once and the rest random repeats, shuffled, cut into runs of ``n_img`` trials."""
    n_trials = cfg.simulation.n_train_trials if split == "train" else 0
    if n_trials:
        shown = np.concatenate([np.arange(n_img), rng.integers(0, n_img, n_trials - n_img)])
        order = rng.permutation(shown)
        return order, np.arange(n_trials) // n_img + 1
    reps = _reps(cfg, split)
    order = np.concatenate([rng.permutation(n_img) for _ in range(reps)])
    return order, np.repeat(np.arange(1, reps + 1), n_img)


def _write_bdata(path: Path, brain: brain_mod.Brain, responses: np.ndarray, image_index: np.ndarray,
                 run: np.ndarray) -> None:
    import bdpy

    bd = bdpy.BData()
    bd.add(responses.astype(np.float64), "VoxelData")
    for key, members in ROI_MASKS.items():
        flag = np.isin(brain.roi, members).astype(float)
        bd.add_metadata(key, flag, f"1 = voxels in {key[4:]}", where="VoxelData")
    for axis, name in enumerate(("voxel_x", "voxel_y", "voxel_z")):
        bd.add_metadata(name, brain.position[:, axis], f"voxel {name[-1]} coordinate (mm)", where="VoxelData")
    bd.add(image_index.astype(float), "image_index")
    bd.add(run.astype(float), "Run")
    bd.save(str(path))


def _write_stimuli(cfg: Config, tmp: Path, sets: dict[str, list[tuple[str, np.ndarray]]],
                   pixels: dict[str, np.ndarray]) -> None:
    """The image folders (8-bit PNG) and image-index lists of the BData layout."""
    split_files = {"train": cfg.data.train, **cfg.data.test}
    for split, items in sets.items():
        spec = split_files[split]
        folder = tmp / spec.images
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for index, ((stem, _), img) in enumerate(zip(items, pixels[split]), start=1):
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{stem}.png")
            lines.append(f"{stem}\t{index}")
        (tmp / spec.image_list).parent.mkdir(parents=True, exist_ok=True)
        (tmp / spec.image_list).write_text("\n".join(lines) + "\n")


def _write_bdata_files(cfg: Config, tmp: Path, maps: dict[str, torch.Tensor]) -> None:
    """One BData file per subject and split; each subject's trial order is its own."""
    from tqdm import tqdm

    split_files = {"train": cfg.data.train, **cfg.data.test}
    for s_index, subject in enumerate(cfg.data.subjects):
        rng = np.random.default_rng([cfg.simulation.seed, 100 + s_index])
        brain = brain_mod.make_brain(cfg.simulation, rng)
        brain_mod.calibrate(brain, cfg.simulation, maps["train"])
        for split in tqdm(maps, desc=f"simulating {subject}", unit="split", leave=False):
            order, run = _trials(cfg, split, len(maps[split]), rng)
            responses = brain_mod.trial_responses(brain, cfg.simulation, maps[split][order], rng)
            path = tmp / split_files[split].bdata.format(subject=subject)
            _write_bdata(path, brain, responses, order + 1, run)


def _matrix_layout(cfg: Config) -> tuple[list[int], str]:
    """The simulated images' shape as the matrix reader reshapes them, and the flattening order."""
    m, size = cfg.data.matrix, cfg.simulation.image_size
    if not m.file.endswith(".mat"):
        raise UserError(f"simulation.format 'matrix' writes MATLAB files, but 'data.matrix.file' is {m.file!r}; "
                        f"give it a .mat name, e.g. '{{subject}}_sim.mat'")
    shape = [size, size] + ([3] if cfg.simulation.stimuli == "natural" else [])  # the other presets are grey
    if list(m.image_shape) != shape and (m.image_shape or len(shape) == 3):
        raise UserError(f"'data.matrix.image_shape' is {list(m.image_shape)} but simulation.stimuli "
                        f"'{cfg.simulation.stimuli}' at simulation.image_size {size} gives images of shape {shape}; "
                        f"set data.matrix.image_shape to {shape}" + (" or []" if len(shape) == 2 else ""))
    return shape, "C" if m.order == "C" else "F"


def _flat_rows(pixels: np.ndarray, shape: list[int], order: str) -> np.ndarray:
    """``(n, 3, S, S)`` uint8 images as ``(n, prod(shape))`` rows: each image as an ``shape`` array
    (H x W, or H x W x 3) flattened in ``order`` ('F': MATLAB's column-major)."""
    arrays = pixels[:, 0] if len(shape) == 2 else pixels.transpose(0, 2, 3, 1)
    return np.stack([a.ravel(order=order) for a in arrays])


def _write_matrix_files(cfg: Config, tmp: Path, pixels: dict[str, np.ndarray], maps: dict[str, torch.Tensor]) -> None:
    """One MATLAB v5 file per subject (module docstring); every file has the same trials in the same order."""
    from scipy.io import savemat
    from tqdm import tqdm

    m = cfg.data.matrix
    shape, order = _matrix_layout(cfg)
    rng_trials = np.random.default_rng([cfg.simulation.seed, 3])
    trials = {split: _trials(cfg, split, len(p), rng_trials)[0] for split, p in pixels.items()}
    rows = {split: _flat_rows(p, shape, order)[trials[split]] for split, p in pixels.items()}
    for s_index, subject in enumerate(cfg.data.subjects):
        rng = np.random.default_rng([cfg.simulation.seed, 100 + s_index])
        brain = brain_mod.make_brain(cfg.simulation, rng)
        brain_mod.calibrate(brain, cfg.simulation, maps["train"])
        variables = {}
        for split in tqdm(maps, desc=f"simulating {subject}", unit="split", leave=False):
            responses = brain_mod.trial_responses(brain, cfg.simulation, maps[split][trials[split]], rng)
            key = "train" if split == "train" else "test"
            variables[getattr(m, f"{key}_voxels")] = responses.astype(np.float64)
            variables[getattr(m, f"{key}_images")] = rows[split]
        path = tmp / m.file.format(subject=subject)
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(path, variables, format="5")


def _check_existing(root: Path, want: dict) -> bool:
    """True if ``root`` already holds the experiment ``want`` describes; a ``UserError`` if it holds
    something else."""
    marker_path = root / "simulation.json"
    if marker_path.is_file():
        have = _with_defaults(json.loads(marker_path.read_text()))
        if have == want:
            log.info("simulated experiment in %s is up to date", root)
            return True
        diff = [k for k in want["simulation"] if have["simulation"].get(k) != want["simulation"][k]]
        what = f"simulation.{diff[0]}" if diff else "its subjects or file layout"
        raise UserError(
            f"{root} holds a simulated experiment with different settings ({what} differs); "
            f"set data.root to a new folder or delete {root}"
        )
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} exists but is not a simulated experiment (no simulation.json); "
                        f"set data.root to an empty folder, or data.source=bdata to read it")
    return False


def simulate_experiment(cfg: Config) -> Path:
    """Make sure the simulated experiment described by ``cfg`` exists under ``data.root``."""
    root = cfg.data_root
    marker_path = root / "simulation.json"
    want = _marker(cfg)
    if _check_existing(root, want):
        return root
    if cfg.simulation.format == "matrix":
        _matrix_layout(cfg)  # a file name or image shape the reader would not take back: refused before any work

    tmp = tmp_path(root)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("simulating experiment into %s", root)
    sets = _stimulus_sets(cfg)
    # 8-bit images as written; channel maps come from these, like any stimulus
    pixels = {split: np.stack([np.round(img * 255).astype(np.uint8) for _, img in items])
              for split, items in sets.items()}
    maps = {split: brain_mod.channel_maps(p.astype(np.float32) / 255) for split, p in pixels.items()}
    if cfg.simulation.format == "matrix":
        _write_matrix_files(cfg, tmp, pixels, maps)
    else:
        _write_stimuli(cfg, tmp, sets, pixels)
        _write_bdata_files(cfg, tmp, maps)
    (tmp / "simulation.json").write_text(json.dumps(want, indent=2))
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except OSError:  # another process simulated the same experiment meanwhile: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not (marker_path.is_file() and _with_defaults(json.loads(marker_path.read_text())) == want):
            raise
    return root
