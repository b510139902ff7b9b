"""The folders ``make reference-seeds`` copies the demo's committed results from: ``python -m tools.seed_run results``
prints the results folder of seed 0 of ``make seeds`` (results/compare/headline/compare.json); ``python -m
tools.seed_run decoding`` the folder holding its stage 1's decoding tables, which is another variant's when that
variant ran the stage 1 the seeds share (the compare cache's stage-1 marker names its config); ``python -m
tools.seed_run merge DECODING METRICS`` adds that folder's stage-1 sections of ``metrics.json`` (decoding scores, data,
info; with its stage-1 run) to the copied ``METRICS``, which a stage-2-only run lacks, and renders ``summary.md`` beside
it again from the merged sections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.config import load_config
from shared.report import write_summary
from shared.runs import atomic_write_json
from stage2_generate.compare.cache import stage1_marker

RECORD = Path("results/compare/headline/compare.json")
STAGE1_SECTIONS = ("experiment", "info", "data", "decoding", "decoding_validation")  # metrics.json's, from stage 1


def seed0() -> Path:
    return Path(next(v["results"] for v in json.loads(RECORD.read_text())["variants"] if v["seed"] == 0))


def decoding_folder() -> Path:
    results = seed0()
    if (results / "decoding.csv").is_file():
        return results
    cfg = load_config(results / "config.yaml")
    marker = stage1_marker(Path(cfg.work_dir) / cfg.experiment, cfg)
    if not marker.is_file():
        raise SystemExit(f"error: no stage-1 marker {marker}: rerun make seeds")
    return Path(json.loads(marker.read_text())["config"]).parent


def merge(decoding: Path, metrics: Path) -> None:
    """Add stage 1's sections of ``decoding``/metrics.json that ``metrics`` lacks, and its stage-1 run; render
    ``summary.md`` beside ``metrics`` from the result."""
    src, dst = json.loads((decoding / "metrics.json").read_text()), json.loads(metrics.read_text())
    if src.get("result_version") != dst.get("result_version"):
        raise SystemExit(f"error: {decoding}/metrics.json and {metrics} were made by other result versions")
    for key in STAGE1_SECTIONS:
        if key in src:
            dst.setdefault(key, src[key])
    if "stage1" in src.get("runs", {}):
        dst.setdefault("runs", {}).setdefault("stage1", str(decoding / src["runs"]["stage1"]))
    atomic_write_json(metrics, dst)
    write_summary(metrics.parent, dst)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["merge"] and len(argv) == 3:
            merge(Path(argv[1]), Path(argv[2]))
            return 0
        if argv not in (["results"], ["decoding"]) or not RECORD.is_file():
            print("usage: python -m tools.seed_run results|decoding (after make seeds), or merge DECODING METRICS",
                  file=sys.stderr)
            return 2
        print(seed0() if argv == ["results"] else decoding_folder())
        return 0
    except (SystemExit, OSError, ValueError) as e:  # a missing or unreadable file: one line
        print(e if isinstance(e, SystemExit) else f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
