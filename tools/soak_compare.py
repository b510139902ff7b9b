"""The soak test's ``compare`` processes (``tools/soak.py --compare P``): ``stage2_generate compare`` of a
one-variant compare file over the round's experiment, under one of two names. Both names share the compare
cache (the variant's store, generator and results), as two comparisons or ``compare --jobs`` variants do, and
a compare runs its variant's stages as child processes (SIGKILLed with it). Everything they write is held to
one serial compare of each name: the tables and figures, the variant's results, store and checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tools.soak_checks import generator_differences, results_differences, store_differences
from tools.soak_procs import ROOT

NAMES = ["soak_a", "soak_b"]
PATHS = {"compare.json", "provenance.json"}  # name the cache's folders and the command: not compared
VARIANT_OWN = frozenset({"config.yaml", "done.json"})  # the variant's config (paths) and its marker (its seconds)


def write_specs(here: Path, cfg: dict, part_units: int) -> None:
    """The compare file of each name in ``here``, over ``cfg`` with its layers split into ``part_units`` (the
    serial compare's, so that its scores are the same bits)."""
    base = here / "compare_base.yaml"
    base.write_text(yaml.safe_dump({**cfg, "decoder": {**cfg["decoder"], "part_units": part_units}}))
    for name in NAMES:
        (here / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "base": str(base), "reference": "base",
                                                           "variants": {"base": {}}}))


def compare_reference(folder: Path, config: dict) -> Path:
    """``<folder>/reference-compare``, where a serial compare of each name over ``config`` has run."""
    here = folder / "reference-compare"
    cfg = {**config, "work_dir": str(here / "work"), "results_dir": str(here / "results")}
    here.mkdir(parents=True)
    write_specs(here, cfg, config["decoder"].get("part_units", 0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("N2P_FAILPOINT", None)
    env.pop("N2P_WAIT_FOR_LOCKS", None)
    for name in NAMES:
        r = subprocess.run([sys.executable, "-m", "stage2_generate", "compare", "--config", str(here / f"{name}.yaml")],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"soak: the serial reference compare failed: {r.stderr.strip()[-500:]}")
    return here


def finished(here: Path, name: str) -> bool:
    """Whether the comparison ``name`` of the round in ``here`` has written its tables."""
    return (here / "results" / "compare" / name / "table.md").is_file()


def _one(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return found[0] if len(found) == 1 else None


def compare_differences(here: Path, ref_here: Path, names: set[str], ref_arrays: dict, experiment: str) -> list[str]:
    """What the round's comparisons (``names``) and their cache hold that the serial compare's do not (the
    tables name the compare file and its base config: the round's folder, a sibling of the serial compare's, is
    read as its)."""
    out = []
    for name in sorted(names):
        ours, theirs = here / "results" / "compare" / name, ref_here / "results" / "compare" / name
        files = {p.name for p in ours.iterdir() if p.is_file() and not p.name.startswith(".")}
        ref_files = {p.name for p in theirs.iterdir() if p.is_file() and not p.name.startswith(".")}
        if files != ref_files:
            out.append(f"compare {name}: files differ (missing {sorted(ref_files - files)}, extra "
                       f"{sorted(files - ref_files)})")
        mine, serial = f"/{here.name}/".encode(), f"/{ref_here.name}/".encode()  # absolute paths or relative ones
        out += [f"compare {name}: {f} differs from the serial compare's" for f in sorted(files & ref_files - PATHS)
                if (ours / f).read_bytes().replace(mine, serial) != (theirs / f).read_bytes()]
    cache, ref_cache = here / "work" / "compare", ref_here / "work" / "compare"
    store, ref_store = _one(cache, "store-*"), _one(ref_cache, "store-*")
    results, ref_results = _one(cache / "results", "*"), _one(ref_cache / "results", "*")
    if None in (store, results):
        n_stores, n_results = len(list(cache.glob("store-*"))), len(list((cache / "results").glob("*")))
        return [*out, f"the compare cache holds {n_stores} store(s) and {n_results} result folder(s) where the "
                      f"serial compare's holds one each"]
    out += [f"compare cache: {d}" for d in store_differences(store / experiment, ref_arrays, ref_store / experiment)]
    out += [f"compare cache: {d}" for d in generator_differences(store / experiment, ref_store / experiment)]
    out += [f"compare cache: {d}" for d in results_differences(results / experiment, ref_results / experiment,
                                                                 skip=VARIANT_OWN)]
    return out
