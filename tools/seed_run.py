"""The folders ``make reference-seeds`` copies the demo's committed results from: ``python -m tools.seed_run results``
prints the results folder of seed 0 of ``make seeds`` (results/compare/headline/compare.json); ``python -m
tools.seed_run decoding`` the folder holding its stage 1's decoding tables, which is another variant's when that
variant ran the stage 1 the seeds share (the compare cache's stage-1 marker names its config); ``python -m
tools.seed_run merge DECODING METRICS`` adds that folder's stage-1 sections of ``metrics.json`` (decoding scores, data,
info) to the copied ``METRICS``, which a stage-2-only run lacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.config import load_config
from shared.runs import atomic_write_json
from stage2_generate.compare.cache import stage1_marker, variant_paths

RECORD = Path("results/compare/headline/compare.json")


def seed0() -> Path:
    return Path(next(v["results"] for v in json.loads(RECORD.read_text())["variants"] if v["seed"] == 0))


def decoding_folder() -> Path:
    results = seed0()
    if (results / "decoding.csv").is_file():
        return results
    cfg = load_config(results / "config.yaml")
    marker = stage1_marker(Path(cfg.work_dir) / cfg.experiment, cfg)
    return Path(json.loads(marker.read_text())["config"]).parent


def merge(decoding: Path, metrics: Path) -> None:
    """Add the sections of ``decoding``/metrics.json that ``metrics`` lacks (stage 1's), and its stage-1 run."""
    src, dst = json.loads((decoding / "metrics.json").read_text()), json.loads(metrics.read_text())
    if src.get("result_version") != dst.get("result_version"):
        raise SystemExit(f"error: {decoding}/metrics.json and {metrics} were made by other result versions")
    for key, value in src.items():
        dst.setdefault(key, value)
    if "stage1" in src.get("runs", {}):
        dst.setdefault("runs", {}).setdefault("stage1", str(decoding / src["runs"]["stage1"]))
    atomic_write_json(metrics, dst)


def main(argv: list[str]) -> int:
    if argv[:1] == ["merge"] and len(argv) == 3:
        merge(Path(argv[1]), Path(argv[2]))
        return 0
    if argv not in (["results"], ["decoding"]) or not RECORD.is_file():
        print("usage: python -m tools.seed_run results|decoding (after make seeds), or merge DECODING METRICS",
              file=sys.stderr)
        return 2
    print(seed0() if argv == ["results"] else decoding_folder())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
