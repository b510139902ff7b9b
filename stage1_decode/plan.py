"""Verb ``plan``: a dataset's fingerprint, and the config both stages then run unchanged.

``python -m stage1_decode plan --data PATH [--out CONFIG] [--set key=value ...] [--device cpu|gpu]``

``PATH`` is a BData folder (the DIR layout: ``<subject>_..._Training_..._VC.h5`` files, image lists and
image folders; the simulated experiments are written so) or a matrix file (``.mat`` / ``.npz``; a name
starting ``sub-XX_`` gives the subject and the pattern ``{subject}_<rest>`` for more subjects). The matrix
file's variables are named from their names (``train`` / ``fit`` / ``trn`` against ``test`` / ``eval`` /
``val``, ``vox`` / ``fmri`` / ``brain`` / ``X`` against ``image`` / ``stim`` / ``pix`` / ``Y``) and their
shapes (the samples of a whole image stack on the first or last axis); where they cannot be told apart,
the one-line error lists them and names the ``--set data.matrix.<key>=NAME`` to pass.

The fingerprint (``shared.fingerprint``) is printed and heads the written config; the settings come from
``stage1_decode.plan_rules``, each with its reason as a comment. The file is written once (an existing one
is kept unless ``--force``), then validated by loading it back as the stages will.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from shared.config import load_config
from shared.config.loading import read_yaml
from shared.errors import UserError

log = logging.getLogger(__name__)

SPLIT_WORDS = {"train": ("train", "trn", "fit", "tr", "training"),
               "test": ("test", "tst", "eval", "val", "te", "hold", "ho")}
KIND_WORDS = {"voxels": ("vox", "fmri", "mri", "brain", "bold", "resp", "x", "beta"),
              "images": ("image", "img", "im", "stim", "pix", "y", "pic")}
BDATA_TRAIN = re.compile(r"^(?P<subject>.+?)_perceptionNaturalImageTraining_original_VC\.h5$")


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, metavar="PATH", help="a BData folder or a .mat / .npz matrix file")
    parser.add_argument("--out", metavar="CONFIG", help="where to write the config (default configs/<name>.yaml)")
    parser.add_argument("--device", choices=("cpu", "gpu"), help="plan for this device (default: a GPU if torch "
                                                                 "sees one)")
    parser.add_argument("--force", action="store_true", help="replace an existing config file")


def _tokens(name: str) -> list[str]:
    out = []
    for t in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])", name):
        t = t.lower()
        if len(t) > 2 and t[0] in "xy" and any(t[1:].startswith(w) for ws in SPLIT_WORDS.values() for w in ws
                                               if len(w) >= 3):
            out += [t[0], t[1:]]  # Xtrain, Ytest
        elif t:
            out.append(t)
    return out


def _says(name: str, words: tuple[str, ...]) -> bool:
    return any(t == w or (len(w) >= 3 and t.startswith(w)) for t in _tokens(name) for w in words)


def guess_matrix(arrays: dict, given: dict | None = None) -> dict[str, object]:
    """``data.matrix.*`` values naming the four variables of ``arrays`` (name -> array) and their sample axes;
    ``given``: the ``data.matrix.*`` values passed with --set, which are taken as they are."""
    given = given or {}
    listing = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(arrays.items()))
    out: dict[str, object] = {}
    unnamed = []
    for split, swords in SPLIT_WORDS.items():
        for kind, kwords in KIND_WORDS.items():
            key = f"data.matrix.{split}_{kind}"
            if key in given:
                if given[key] not in arrays:
                    raise UserError(f"--set {key}={given[key]}: the file has no such variable; it holds {listing}")
                out[key] = given[key]
                continue
            hits = [k for k in arrays if _says(k, swords) and _says(k, kwords)
                    and not _says(k, SPLIT_WORDS["test" if split == "train" else "train"])]
            if len(hits) == 1:
                out[key] = hits[0]
            else:
                unnamed.append((key, "none" if not hits else f"{len(hits)} ({', '.join(sorted(hits))})"))
    if unnamed:  # every array it cannot name, in one line
        which = "; ".join(f"{key.split('.')[-1].replace('_', ' ')}: {why} match" for key, why in unnamed)
        flags = " ".join(f"--set {key}=NAME" for key, _ in unnamed)
        raise UserError(f"cannot tell which variables hold the data by their names ({which}) among {listing}; "
                        f"pass {flags}")
    return {**out, **_axes(arrays, out, given)}


def _axes(arrays: dict, names: dict, given: dict) -> dict[str, object]:
    """``data.matrix.voxel_sample_axis`` and ``sample_axis`` that make each split's voxel rows and images agree on
    the number of samples (the samples first or last in each; first wins a tie)."""
    out: dict[str, object] = {}
    for split in SPLIT_WORDS:
        vname, iname = names[f"data.matrix.{split}_voxels"], names[f"data.matrix.{split}_images"]
        vox, img = arrays[vname], arrays[iname]
        counts = [img.shape[0]] + ([img.shape[-1]] if img.ndim >= 3 else [])
        vaxis = given.get("data.matrix.voxel_sample_axis")
        if vaxis not in (None, 0, 1):
            raise UserError(f"'data.matrix.voxel_sample_axis' must be one of [0, 1]; {vaxis!r} was given")
        if vaxis is None:
            vaxis = 0 if vox.shape[0] in counts else 1 if vox.ndim == 2 and vox.shape[1] in counts else None
        if vaxis is None or vox.ndim != 2 or vox.shape[vaxis] not in counts:
            raise UserError(f"the {split} voxels {vname} {tuple(vox.shape)} and images {iname} {tuple(img.shape)} "
                            f"share no number of samples on their first or last axis; each image needs one row (or "
                            f"column) of voxels")
        if out.setdefault("data.matrix.voxel_sample_axis", vaxis) != vaxis:
            raise UserError(f"the training voxels hold their samples on axis {out['data.matrix.voxel_sample_axis']}, "
                            f"the test voxels {vname} {tuple(vox.shape)} on axis {vaxis}; store both the same way")
        if img.ndim >= 3 and img.shape[0] != vox.shape[vaxis]:
            out["data.matrix.sample_axis"] = -1
    return {k: v for k, v in out.items() if k not in given and v != 0}


def data_values(path: Path, given: dict | None = None) -> dict[str, object]:
    """The ``data.*`` values that read ``path``, and ``experiment`` named after it (``given``: the --set values)."""
    if path.is_file() and path.suffix in (".mat", ".npz"):
        from shared.matrix_data import read_arrays

        m = re.match(r"^(sub-[A-Za-z0-9]+)_(.+)$", path.name)
        subject, file = (m.group(1), "{subject}_" + m.group(2)) if m else ("sub-01", path.name)
        subjects = [subject]
        if m:
            pattern = re.compile("^" + re.escape("{subject}_" + m.group(2)).replace(re.escape("{subject}"),
                                                                                  "(sub-[A-Za-z0-9]+)") + "$")
            subjects = sorted(g.group(1) for p in path.parent.iterdir() if (g := pattern.match(p.name)))
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", m.group(2).rsplit(".", 1)[0] if m else path.stem)
        return {"experiment": stem, "data.source": "matrix", "data.root": str(path.parent),
                "data.subjects": subjects, "data.rois": ["all"], "data.matrix.file": file,
                **guess_matrix(read_arrays(path), given)}
    if path.is_dir():
        subjects = sorted(g.group("subject") for p in path.iterdir() if (g := BDATA_TRAIN.match(p.name)))
        if not subjects:
            mats = sorted(p.name for p in path.iterdir() if p.suffix in (".mat", ".npz"))
            hint = f"; for a matrix file pass it: --data {path / mats[0]}" if mats else ""
            raise UserError(f"{path} holds no BData training file named <subject>_perceptionNaturalImageTraining_"
                            f"original_VC.h5 (the DIR layout){hint}")
        from shared.bdata_reader import open_bdata

        keys = [k[4:] for k in open_bdata(next(p for p in path.iterdir() if BDATA_TRAIN.match(p.name))).metadata.key
                if k.startswith("ROI_")]
        rois = ["VC"] if "VC" in keys else keys[:1]  # for the fingerprint; the plan's rule picks data.rois
        return {"experiment": re.sub(r"[^A-Za-z0-9_]+", "_", path.resolve().name), "data.source": "bdata",
                "data.root": str(path), "data.subjects": subjects, "data.rois": rois, "rois_in_file": keys}
    raise UserError(f"--data {path} is neither a BData folder nor a .mat / .npz file")


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _imagenet_present() -> bool:
    from shared.featnet import imagenet_weights_path

    return all(imagenet_weights_path(n)[0].is_file() for n in ("vgg19", "alexnet"))


def _value(text: str):
    """A --set value as load_config reads it (YAML, else the text itself)."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _flat(raw: dict, prefix: str = "") -> dict[str, object]:
    """A config file's mapping as ``{dotted key: value}``."""
    out: dict[str, object] = {}
    for k, v in raw.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _nested(values: dict[str, object]) -> dict:
    out: dict = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def plan_verb(args) -> None:
    import yaml

    from shared.data_source import DataSource
    from shared.fingerprint import fingerprint
    from shared.runs import atomic_write_text
    from stage1_decode.plan_rules import plan

    path = Path(args.data)
    given = {k.strip(): _value(v) for k, v in (o.partition("=")[::2] for o in args.overrides)}
    data = data_values(path, given)
    available = data.pop("rois_in_file", None)
    cfg = load_config(args.config, args.overrides, values=data)
    log.info("reading %s for its fingerprint", path)
    fp = fingerprint(DataSource.of(cfg))
    gpu = (args.device == "gpu") if args.device else _gpu()
    values, reasons = plan(fp, gpu, _imagenet_present(), available)
    base = _flat(read_yaml(args.config, "config file")) if args.config else {}
    written = {**base, **data, **values, **given}
    out = Path(args.out) if args.out else Path("configs") / f"{written['experiment']}.yaml"
    head = [f"Planned by: python -m stage1_decode plan --data {path}" + "".join(f" --set {o}" for o in args.overrides),
            "", "Fingerprint:", *fp.lines(), "", f"Settings for a {'GPU' if gpu else 'CPU'} (stage1_decode/plan_rules.py):",
            *reasons]
    text = "".join(f"# {line}\n" if line else "#\n" for line in head) + yaml.safe_dump(
        _nested(written), sort_keys=False, default_flow_style=None)
    sys.stdout.write("\n".join(fp.lines()) + "\n")
    if args.dry_run:
        sys.stdout.write(text)
        return
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --out another file, or --force to replace it")
    load_config(None, values=written)  # checked as the stages will read it, before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    sys.stdout.write(f"wrote {out}; next: python -m stage1_decode run --config {out} && "
                     f"python -m stage2_generate run --config {out}\n")
