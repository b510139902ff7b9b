"""Write a complete simulated experiment in the real Deep Image Reconstruction formats.

Output under ``data.root`` (file names from the config, defaults as in the real set):

* ``sub-01_perceptionNaturalImageTraining_original_VC.h5`` and the test files: bdpy
  BData with ``VoxelData`` columns flagged by ``ROI_V1 ... ROI_VC`` masks, voxel
  coordinates, and the ``image_index`` and ``Run`` columns, one row per trial;
* ``image_list_*.tsv``: ``<image file stem>\\t<1-based index>`` per line;
* ``images/<split>/<stem>.png``: the stimuli.
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
from PIL import Image

from shared.config import Config
from shared.errors import UserError
from shared.runs import tmp_path
from shared.simulate import brain as brain_mod
from shared.simulate import stimuli

log = logging.getLogger(__name__)

SPLIT_KINDS = ("natural", "artificial", "letter")
ROI_MASKS = {
    "ROI_V1": ("V1",), "ROI_V2": ("V2",), "ROI_V3": ("V3",), "ROI_V4": ("V4",),
    "ROI_LOC": ("LOC",), "ROI_FFA": ("FFA",), "ROI_PPA": ("PPA",),
    "ROI_LVC": ("V1", "V2", "V3"), "ROI_HVC": ("LOC", "FFA", "PPA"),
    "ROI_VC": ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "other"),
}


def _marker(cfg: Config) -> dict:
    return {
        "simulation": asdict(cfg.simulation),
        "subjects": list(cfg.data.subjects),
        "train": asdict(cfg.data.train),
        "test": {k: asdict(v) for k, v in cfg.data.test.items()},
    }


def _stimulus_sets(cfg: Config) -> dict[str, list[tuple[str, np.ndarray]]]:
    sim = cfg.simulation
    size = sim.image_size
    rng_train = np.random.default_rng([sim.seed, 1])
    rng_test = np.random.default_rng([sim.seed, 2])
    sets = {"train": [(f"sim_train_{i + 1:04d}", stimuli.natural_scene(rng_train, size))
                      for i in range(sim.n_train_images)]}
    for name, spec in cfg.data.test.items():
        if name == "natural":
            sets[name] = [(f"sim_test_{i + 1:03d}", stimuli.natural_scene(rng_test, size))
                          for i in range(sim.n_test_natural)]
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
    return {"train": sim.n_train_reps, "natural": sim.n_test_natural_reps,
            "artificial": sim.n_test_artificial_reps, "letter": sim.n_test_letter_reps}[split]


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


def simulate_experiment(cfg: Config) -> Path:
    """Make sure the simulated experiment described by ``cfg`` exists under ``data.root``."""
    from tqdm import tqdm

    root = cfg.data_root
    marker_path = root / "simulation.json"
    want = _marker(cfg)
    if marker_path.is_file():
        have = json.loads(marker_path.read_text())
        if have == want:
            log.info("simulated experiment in %s is up to date", root)
            return root
        diff = [k for k in want["simulation"] if have.get("simulation", {}).get(k) != want["simulation"][k]]
        what = f"simulation.{diff[0]}" if diff else "its subjects or file layout"
        raise UserError(
            f"{root} holds a simulated experiment with different settings ({what} differs); "
            f"set data.root to a new folder or delete {root}"
        )
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} exists but is not a simulated experiment (no simulation.json); "
                        f"set data.root to an empty folder, or data.source=bdata to read it")

    tmp = tmp_path(root)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("simulating experiment into %s", root)
    sets = _stimulus_sets(cfg)
    split_files = {"train": cfg.data.train, **cfg.data.test}
    for split, items in sets.items():
        spec = split_files[split]
        folder = tmp / spec.images
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for index, (stem, img) in enumerate(items, start=1):
            Image.fromarray(np.round(img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(folder / f"{stem}.png")
            lines.append(f"{stem}\t{index}")
        (tmp / spec.image_list).parent.mkdir(parents=True, exist_ok=True)
        (tmp / spec.image_list).write_text("\n".join(lines) + "\n")

    # channel maps come from the images as written (8-bit PNG), like any stimulus
    maps = {}
    for split, items in sets.items():
        folder = tmp / split_files[split].images
        imgs = np.stack([np.asarray(Image.open(folder / f"{stem}.png"), dtype=np.float32).transpose(2, 0, 1) / 255
                         for stem, _ in items])
        maps[split] = brain_mod.channel_maps(imgs)

    for s_index, subject in enumerate(cfg.data.subjects):
        rng = np.random.default_rng([cfg.simulation.seed, 100 + s_index])
        brain = brain_mod.make_brain(cfg.simulation, rng)
        brain_mod.calibrate(brain, cfg.simulation, maps["train"])
        for split in tqdm(sets, desc=f"simulating {subject}", unit="split", leave=False):
            n_img = len(sets[split])
            reps = _reps(cfg, split)
            order = np.concatenate([rng.permutation(n_img) for _ in range(reps)])
            run = np.repeat(np.arange(1, reps + 1), n_img)
            responses = brain_mod.trial_responses(brain, cfg.simulation, maps[split][order], rng)
            path = tmp / split_files[split].bdata.format(subject=subject)
            _write_bdata(path, brain, responses, order + 1, run)
    (tmp / "simulation.json").write_text(json.dumps(want, indent=2))
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except OSError:  # another process simulated the same experiment meanwhile: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not (marker_path.is_file() and json.loads(marker_path.read_text()) == want):
            raise
    return root
