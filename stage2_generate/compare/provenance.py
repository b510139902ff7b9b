"""What a comparison's tables were made from, and whether today's code would still make them.

``compare`` writes ``provenance.json`` beside its tables: the command line, the compare file, the
``--base`` config, the ``--set`` overrides and ``--seeds``, the result version (``shared.report``) and
the cache version, and each run's ``result_key`` (``cache.py``: a hash of everything that run's
numbers depend on) with those settings spelt out in full (``result_settings``). ``stale_reasons`` reads that
record back against the code as it is now: it loads the same compare file with the same arguments, recomputes
every run's key and settings and names what differs (a result or cache version raised since, a config or a
default that changed, a key gone, a variant added or dropped, a compare file that no longer loads). An empty list means the tables are what the code computes today; the committed reference
tables are held to that by ``tests/test_reference_fresh.py``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from shared.errors import UserError
from shared.report import RESULT_VERSION
from stage2_generate.compare.cache import result_key, result_settings

PROVENANCE = "provenance.json"


def _rel(path: Path | str) -> str:
    """``path`` relative to the working directory where it lies under it (commands run from the repo root)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(p)


def command_line(file: str, base: str | None, overrides: list[str], seeds: int | None, jobs: int = 1) -> str:
    """The shell command that remakes the tables (``--jobs`` changes how fast, not what)."""
    words = ["python", "-m", "stage2_generate", "compare", "--config", file]
    if base:
        words += ["--base", base]
    for o in overrides:
        words += ["--set", o]
    if seeds is not None:
        words += ["--seeds", str(seeds)]
    if jobs > 1:
        words += ["--jobs", str(jobs)]
    return " ".join(shlex.quote(w) for w in words)


def provenance(spec, args, variants) -> dict[str, Any]:
    """The record of one ``compare`` call's tables (``variants``: the runs the tables hold)."""
    from stage2_generate.compare.cache import CACHE_VERSION

    file = _rel(spec.path)
    base = _rel(args.base) if args.base else None
    overrides = list(args.overrides)
    seeds = getattr(args, "seeds", None)
    return {
        "command": command_line(file, base, overrides, seeds, getattr(args, "jobs", 1)),
        "file": file, "base": base, "set": overrides, "seeds": seeds,
        "result_version": RESULT_VERSION, "cache_version": CACHE_VERSION,
        "results": {v.name: result_key(v.cfg) for v in variants},
        "settings": {v.name: result_settings(v.cfg) for v in variants},
    }


def read_provenance(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else None


def stale_reasons(record: dict[str, Any], root: Path | str = ".") -> list[str]:
    """Why tables made as ``record`` says are no longer what the code computes (empty: they are).

    ``root``: the folder the recorded paths are relative to (the repository root)."""
    from stage2_generate.compare.cache import CACHE_VERSION
    from stage2_generate.compare.spec import load_compare

    reasons = []
    if record.get("result_version") != RESULT_VERSION:
        reasons.append(f"made at result version {record.get('result_version')}, the code is at {RESULT_VERSION}")
    if record.get("cache_version") != CACHE_VERSION:
        reasons.append(f"made at cache version {record.get('cache_version')}, the code is at {CACHE_VERSION}")
    root = Path(root)
    here = Path.cwd()
    try:  # the compare file's paths (its base, the data roots) are read as the command read them
        os.chdir(root)
        spec = load_compare(record["file"], record.get("set", []), record.get("base"), record.get("seeds"))
        now = {v.name: result_key(v.cfg) for v in spec.variants}
        settings = {v.name: result_settings(v.cfg) for v in spec.variants}
    except (UserError, OSError) as exc:  # a file moved, a key renamed: the tables no longer follow from the code
        return reasons + [f"{record['file']} no longer loads as it did ({exc})"]
    finally:
        os.chdir(here)
    made = record.get("results", {})
    for name in sorted(set(now) | set(made)):
        if name not in made:
            reasons.append(f"run {name!r} is in the compare file but not in the tables")
        elif name not in now:
            reasons.append(f"run {name!r} is in the tables but no longer in the compare file")
        elif made[name] != now[name]:
            reasons.append(f"run {name!r}: its settings changed since (result key {made[name]}, now {now[name]})")
        elif name in record.get("settings", {}):
            reasons += [f"run {name!r}: {d}" for d in settings_drift(record["settings"][name], settings[name])]
    return reasons


def settings_drift(made: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys whose value differs between a recorded ``result_settings`` and today's (a default changed since, or a
    key gone); a key added since, absent from the record, is not one (it computes as before unless its default says
    otherwise, which is what raising the cache version is for)."""
    out = [f"{k} was {made[k]!r}, now {now[k]!r}" for k in sorted(made) if k in now and made[k] != now[k]]
    return out + [f"{k} is no longer a setting" for k in sorted(made) if k not in now]
