"""The soak test's checks (``tools/soak.py``): one round's feature store, tables and generator checkpoints
against those of the clean serial run, and what no round may leave behind (temporary files, the name files
of lock holders that are gone, a lock still held).

Bitwise where the serial run is bitwise reproducible (two serial runs in two folders agree, and a resumed
training ends where an uninterrupted one does): every array of the store, every table, figure and saved
reconstruction, ``metrics.json`` and ``per_image.json``, every tensor of the generator's checkpoints. Not
compared: what names its own run or folder (``runs/`` and ``metrics.json``'s ``runs``, the fingerprints and
generator keys, which hash paths and modification times) and the seconds per step in ``stats.jsonl``.
Stage 1's scores are held to a serial stage 1 that split its layers into the same parts (``decoder.part_units``):
the arrays are the same bits however a layer is split, but scores merged from parts' sums differ from one
process's running sums in their last digits (float additions in another order).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

TEMPORARY = re.compile(r"^\..+\.tmp-\d+")  # shared.runs.tmp_path: .<name>.tmp-<pid>[.<suffix>]
HOLDER = re.compile(r"^\.(lock|lock-writers|split-p\d+-c\d+)\.\d+$")  # a holder's name file (shared.locks)
# flock files, kept between runs (a split's, when its last holder was killed: the next of that split removes it)
LOCK = re.compile(r"^\.(lock|lock-writers|claim|claim-.+|.+\.claim-.+|split-p\d+-c\d+)$")
STAGE2_KEYS = ("reconstruction", "result_key", "result_settings")  # what only stage 2 writes in metrics.json
STAGE1_RESULTS = re.compile(r"^(decoding.*\.(md|csv|png)|metrics\.json|summary\.md)$")
UNCOMPARED = {"stats.jsonl"}  # its seconds per step: compared through the generator's stats.jsonl


def arrays(work: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Every array of the store (true and decoded features) as readers see it, with its stimulus names, by
    path under ``features/``; part files are read through the array stitched over them."""
    from shared.store import FeatureArray

    out = {}
    root = work / "features"
    for path in sorted(root.rglob("*.h5")):
        if ".part-" in path.name or path.name.startswith("."):
            continue
        with FeatureArray(path) as arr:
            out[str(path.relative_to(root))] = (arr.read(), list(arr.names))
    return out


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def store_differences(work: Path, ref_arrays: dict, stage1_work: Path) -> list[str]:
    """What differs between the round's store and the serial run's: arrays (bits and names, ``ref_arrays``),
    and, against ``stage1_work`` (the store of a serial stage 1 that split its layers as the round did), each
    layer's scores (``done.json``) and each ROI's data report (``data.json``)."""
    out = []
    ours = arrays(work)
    if ours.keys() != ref_arrays.keys():
        missing, extra = sorted(ref_arrays.keys() - ours.keys()), sorted(ours.keys() - ref_arrays.keys())
        out.append(f"store arrays differ (missing {missing[:3]}, extra {extra[:3]})")
    for key in sorted(ours.keys() & ref_arrays.keys()):
        (a, names), (b, ref_names) = ours[key], ref_arrays[key]
        if not _same_array(a, b) or names != ref_names:
            out.append(f"array {key} differs from the serial run's")
    for name, field in (("done.json", "scores"), ("data.json", "report")):
        for ref in sorted((stage1_work / "features").rglob(name)):
            path = work / ref.relative_to(stage1_work)
            if not path.is_file():
                out.append(f"{path.relative_to(work)} is missing")
            elif json.loads(path.read_text()).get(field) != json.loads(ref.read_text()).get(field):
                out.append(f"{path.relative_to(work)}: its {field} differ from the serial run's")
    return out


def _metrics(path: Path, stage: str) -> dict:
    """``metrics.json``'s sections of one stage, run records aside."""
    metrics = json.loads(path.read_text())
    return {k: v for k, v in metrics.items() if k != "runs" and k.startswith(STAGE2_KEYS) == (stage == "stage2")}


def results_differences(results: Path, ref_results: Path, stage1_results: Path | None = None,
                        stage2: bool = True, skip: frozenset = frozenset()) -> list[str]:
    """What differs between the round's results folder and the serial run's (``ref_results``; run directories
    aside): the same files, each the same bytes, ``metrics.json`` the same apart from its run records. Stage
    1's files and sections are held to ``stage1_results`` (a serial stage 1 that split its layers as the round
    did: scores merged from parts differ from one process's in their last digits); a round without stage 2 is
    held to stage 1's files. Files named in ``skip`` are not compared."""
    stage1_results = stage1_results or ref_results

    def listing(folder: Path) -> set[str]:
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        files = {f for f in files if not f.startswith("runs/") and not Path(f).name.startswith(".")}
        return files if stage2 else {f for f in files if STAGE1_RESULTS.match(f)}

    ours, ref = listing(results), listing(ref_results)
    out = []
    if ours != ref:
        out.append(f"results files differ (missing {sorted(ref - ours)[:3]}, extra {sorted(ours - ref)[:3]})")
    for name in sorted(ours & ref - UNCOMPARED - skip):
        if name == "metrics.json":
            for stage, folder in (("stage1", stage1_results), *((("stage2", ref_results),) if stage2 else ())):
                if _metrics(results / name, stage) != _metrics(folder / name, stage):
                    out.append(f"metrics.json's {stage} sections differ from the serial run's (run records aside)")
        elif name == "summary.md" and not stage2:
            continue  # the serial run's also lists its reconstructions
        else:
            folder = stage1_results if name.startswith("decoding") else ref_results
            if (results / name).read_bytes() != (folder / name).read_bytes():
                out.append(f"results file {name} differs from the serial run's")
    return out


def _flat(obj, prefix: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _ticks(path: Path) -> list[dict]:
    """The tick records of a training's ``stats.jsonl`` (the last of each step), without their timings."""
    from stage2_generate.generator_files import tick_records

    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in tick_records(path)]


def generator_differences(work: Path, ref_work: Path) -> list[str]:
    """What differs between the round's generator folders and the serial run's: as many trainings, the same
    files, every checkpoint the same tensors and values (its key aside: a hash of paths), the same ticks."""
    import torch

    from shared import checkpoints

    def folders(w: Path) -> list[Path]:
        return sorted(p for p in (w / "generator").iterdir() if p.is_dir()) if (w / "generator").is_dir() else []

    ours, ref = folders(work), folders(ref_work)
    if len(ref) > 1:  # a shared reference other runs trained in too: the serial run's own (its first stage 2's)
        meta = ref_work.parents[1] / "results" / ref_work.name / "runs" / "stage2-001" / "meta.json"
        key = json.loads(meta.read_text()).get("generator_key") if meta.is_file() else None
        ref = [p for p in ref if p.name == key] or ref
    if len(ours) != len(ref) or len(ref) != 1:
        return [f"{len(ours)} generator folder(s) where the serial run has {len(ref)}"]
    (ours,), (ref,) = ours, ref
    names = {p.name for p in ours.iterdir() if not p.name.startswith(".")}
    ref_names = {p.name for p in ref.iterdir() if not p.name.startswith(".")}
    if names != ref_names:
        return [f"generator files differ (missing {sorted(ref_names - names)}, extra {sorted(names - ref_names)})"]
    out = []
    for name in sorted(names):
        if name.endswith((".pt", ".prev")):
            a = dict(_flat(checkpoints.load(ours / name, "cpu")))
            b = dict(_flat(checkpoints.load(ref / name, "cpu")))
            bad = [k for k in b if k != "/key" and (k not in a or not (
                torch.equal(a[k], b[k]) if torch.is_tensor(b[k]) and torch.is_tensor(a[k]) else a[k] == b[k]))]
            if bad or a.keys() != b.keys():
                out.append(f"generator {name} differs from the serial run's (first: {(bad or ['its keys'])[0]})")
        elif name == "stats.jsonl":
            if _ticks(ours / name) != _ticks(ref / name):
                out.append("the generator's ticks (stats.jsonl) differ from the serial run's")
        elif (ours / name).read_bytes() != (ref / name).read_bytes():
            out.append(f"generator file {name} differs from the serial run's")
    return out


def leftovers(*folders: Path) -> list[str]:
    """Temporary files, name files of lock holders that are gone, hidden files of no known kind, and lock
    files still locked: none may be left once every process of a round has ended."""
    import fcntl

    out = []
    for folder in folders:
        for path in sorted(folder.rglob(".*")):
            rel = path.relative_to(folder.parent)
            if TEMPORARY.match(path.name):
                out.append(f"temporary file {rel} left behind")
            elif HOLDER.match(path.name):
                out.append(f"lock holder's name file {rel} left behind")
            elif not LOCK.match(path.name) or not path.is_file():
                out.append(f"unexpected hidden file {rel}")
            else:
                with open(path) as fh:
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        out.append(f"lock file {rel} is still locked")
    return out
