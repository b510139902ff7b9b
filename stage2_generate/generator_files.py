"""A generator's files under ``<work>/generator/<key>/``: the training key that names the folder,
the checks of what a training would resume from, the finished generator's record and the
training's ``stats.jsonl``.

* ``checkpoint.pt`` (and its previous copy): every state dict of the last tick, to resume from;
* ``best.pt``: the EMA of the tick with the highest mean score on the validation hold-out (the
  only tick beside the last one that ``watch.TickChooser`` may choose);
* ``generator.pt``: the finished generator (the EMA of the chosen tick) with its step, score, the
  choice's record (``tick``) and rollbacks; a later run with the same key reuses it;
* ``stats.jsonl`` and ``training.png``: every tick (with its per-image validation values) and
  rollback, over resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from shared import checkpoints
from shared.config import Config, GeneratorConfig, perceptual_weights
from shared.errors import UserError
from shared.layers import is_pixels
from stage2_generate.models import Generator

log = logging.getLogger(__name__)


# generator settings added after generators were trained: at these values a key leaves them out, so the generators
# trained before the setting existed stay reusable
ADDED_LATER = {"start": "mean", "loss_ssim": 0.0}


def training_key(cfg: Config, channels: int = 3, inputs: list[Path] = (), tag: dict | None = None,
                 switched_off: tuple[str, ...] = ()) -> str:
    """Hash of everything that determines the trained generator (resume only on a match): the whole
    experiment's identity, so it takes the whole Config.

    ``inputs`` are the feature-store files training reads; their size and modification
    time enter the hash, so features decoded again (another seed, decoder or an
    ``import-lab``) train a new generator. ``tag`` tells apart generators of other methods
    (``end_to_end``) trained with the same settings; ``switched_off``: losses that training has
    no use for (their weight is hashed as 0). With a validation hold-out, ``eval.score_size`` enters
    too: the hold-out is scored at that size, so a tick chosen at one size is not reused at another.
    """
    from dataclasses import asdict

    g = asdict(cfg.generator)
    for name in switched_off:
        g[f"loss_{name}"] = 0.0
    for key, default in ADDED_LATER.items():  # at its default, hashed as before the key existed
        if g.get(key) == default:
            g.pop(key)
    g.pop("iterations")  # more iterations continue the same training from its checkpoint
    for name in ("max_rollbacks", "rollback_lr_factor"):  # a run stopped by dead ticks resumes with more rollbacks
        g.pop(name)
    f = cfg.features
    blob = json.dumps({"generator": g, "perceptual_weights": perceptual_weights(cfg), "channels": channels,
                       "features": [f.network, f.weights, f.input_size], "root": cfg.data.root,
                       "train": asdict(cfg.data.train), "decoder": asdict(cfg.decoder),
                       "subjects": cfg.data.subjects, "rois": cfg.data.rois, "seed": cfg.seed,
                       "inputs": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in inputs],
                       "simulation": asdict(cfg.simulation) if cfg.data.source == "simulated" else None,
                       # the hold-out decides which images train, and (scored at score_size) which tick reconstructs;
                       # 2: the output starts at the mean image, unsquashed; 3: the tick chosen beyond the hold-out's
                       # noise (watch.TickChooser), the dead-output check on raw outputs
                       "validation": [cfg.eval.validation_fraction, cfg.eval.validation_metric,
                                      cfg.eval.score_size if cfg.eval.validation_fraction > 0 else None],
                       "version": 3,
                       **({"tag": tag} if tag else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_checkpoint(state: dict, key: str, modules: dict[str, torch.nn.Module], path: Path) -> None:
    """Refuse, in one line, a checkpoint of another training or whose tensors do not fit ``modules``."""
    if not isinstance(state, dict) or "key" not in state:
        raise UserError(f"{path} is not a generator checkpoint of this tool; move it away or delete it")
    if state["key"] != key:
        raise UserError(f"{path} is a checkpoint of another training (key {state['key']}, this one is {key}); "
                        f"it was copied here by hand: move it away or delete it to train afresh")
    for name, module in modules.items():
        want = module.state_dict()
        have = state.get(name, {})
        bad = [k for k in want if k not in have or tuple(have[k].shape) != tuple(want[k].shape)]
        if bad or set(have) - set(want):
            k = (bad or sorted(set(have) - set(want)))[0]
            shape = tuple(have[k].shape) if k in have else "missing"
            raise UserError(f"{path} holds a generator of another architecture ({name} tensor {k}: {shape}, this "
                            f"config needs {tuple(want[k].shape) if k in want else 'none'}); delete "
                            f"{path.parent} to train afresh, or use the config it was trained with")


def final_state(path: Path, device, warn: bool = True) -> dict | None:
    """The trained generator's file, or None when there is none or it is damaged (then training resumes
    from its last checkpoint, which at the final step rebuilds it without a step)."""
    if not path.is_file():
        return None
    try:
        return checkpoints.load(path, device)
    except checkpoints.CorruptCheckpoint as exc:
        if warn:
            log.warning("%s; rebuilding it from the training checkpoints", exc)
        return None


def pixel_start(g: GeneratorConfig, transforms: list) -> tuple | None:
    """The generator's ``start`` for ``generator.start: decoded_pixels``: the first ``pixels<N>`` conditioning
    layer's index and its z-scoring statistics (``conditioning.LayerTransform``); None for ``mean``."""
    if g.start != "decoded_pixels":
        return None
    i = next(k for k, tf in enumerate(transforms) if is_pixels(tf.layer))
    tf = transforms[i]
    return i, tf.mean.reshape(tf.unit_shape), tf.std.reshape(tf.unit_shape)


def build_generator(g: GeneratorConfig, shapes: list[tuple], channels: int, device,
                    mean_image: np.ndarray | None = None, transforms: list = ()) -> Generator:
    """The seeded, untrained generator; it starts at ``mean_image`` ``(3, S, S)`` (the training images' mean),
    or at the decoded pixels of ``transforms`` (``generator.start``)."""
    torch.manual_seed(g.seed)
    return Generator(shapes, g.image_size, g.base_channels, channels, mean_image=mean_image,
                     start=pixel_start(g, list(transforms))).to(device)


def preflight(g: GeneratorConfig, ckpt_dir: Path, key: str, shapes: list[tuple], channels: int,
              transforms: list = ()) -> None:
    """Check the generator files a training would resume from, before anything is written."""
    G = build_generator(g, shapes, channels, "cpu", transforms=transforms)
    final_path, ckpt_path = ckpt_dir / "generator.pt", ckpt_dir / "checkpoint.pt"
    final = final_state(final_path, "cpu", warn=False)
    if final is not None:
        check_checkpoint(final, key, {"generator": G}, final_path)
    state, path = checkpoints.load_latest(ckpt_path, "cpu")
    if state is not None:
        check_checkpoint(state, key, {"generator": G, "generator_ema": G}, path)
        if state["step"] > g.iterations:
            raise UserError(f"{path} holds {state['step']} generator steps, more than generator.iterations="
                            f"{g.iterations}; raise generator.iterations or delete {ckpt_dir} to train "
                            f"afresh")


def training_record(ckpt_dir: Path) -> dict:
    """What a finished training reports (``metrics.json`` ``reconstruction_info.generator``): the tick that
    reconstructs (``best_step``, the name kept for the chosen tick) and its mean validation score
    (``best_score``), every rollback, the CPU thread counts of its starts and resumes (``threads``), and how the
    tick was chosen: ``tick_rule`` (one sentence),
    ``holdout_too_small`` (true when the hold-out had fewer than ``watch.MIN_HOLDOUT`` images, so the
    last tick reconstructs), ``holdout_images``, and ``tick_choice`` (the highest-scoring tick, the last
    tick, the highest's mean gain over the last and its lower bootstrap quantile, ``beyond_noise``)."""
    from stage2_generate.watch import tick_rule

    state = checkpoints.load(ckpt_dir / "generator.pt", "cpu")
    out = {k: state.get(k) for k in ("best_step", "best_score", "validation_metric", "rollbacks", "lr_scale")}
    if state.get("threads"):  # the CPU thread counts it trained under (trainings since they were kept)
        out["threads"] = [int(t) for t in state["threads"]]
    tick = state.get("tick") or {}
    out.update(tick_rule=tick.get("tick_rule", tick_rule(state.get("validation_metric"))),
               holdout_too_small=bool(tick.get("holdout_too_small", False)),
               holdout_images=tick.get("holdout_images", 0),
               tick_choice={k: v for k, v in tick.items() if k not in ("tick_rule", "holdout_too_small",
                                                                      "holdout_images")})
    return out


def tick_records(path: Path) -> list[dict]:
    """The tick records of a training's whole ``stats.jsonl`` (over resumes and rollbacks): the last one of
    each step, in step order."""
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "event" not in record:
            by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def append_stats(record: dict, folders: list[Path | None]) -> None:
    """One JSON line in ``stats.jsonl`` of the run and of the training (which spans resumes)."""
    for folder in folders:
        if folder is not None:
            with open(folder / "stats.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
