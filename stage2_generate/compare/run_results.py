"""Reading a finished variant's results back for the tables (``report.collect``): its per-image scores, its
validation hold-out's means and the CPU thread counts its generator trained under."""

from __future__ import annotations

import json
from pathlib import Path

from shared.errors import UserError
from shared.report import VALIDATION_SECTION


def read_per_image(results: Path) -> dict:
    path = results / "per_image.json"
    if not path.is_file():
        raise UserError(f"{path} is missing (results of an older stage 2); delete {results.parent} and rerun compare")
    per = json.loads(path.read_text())
    first = next((m for split in per.values() for subject in split.values() for m in subject.values()), {})
    if first and "rmse" not in first:  # scored before the lab's metrics: its rows would lack columns
        raise UserError(f"{path} was scored by an older stage 2 (no rmse, Euclidean or top-1 identification); "
                        f"delete {results.parent} and rerun compare")
    return per


def read_validation(results: Path) -> dict:
    """``subject -> method -> mean scores`` on the validation hold-out of the training images."""
    return json.loads((results / "metrics.json").read_text()).get(VALIDATION_SECTION, {})


def read_threads(results: Path) -> tuple[int, ...] | None:
    """The CPU thread counts (torch's) the generator of ``results`` was trained under, each start and resume
    (``metrics.json``'s ``reconstruction_info.generator.threads``); for results of a training that did not
    record them, the count of the stage-2 run that wrote them (its ``meta.json``); None when unknown."""
    try:
        metrics = json.loads((results / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    trained = metrics.get("reconstruction_info", {}).get("generator", {}).get("threads")
    if trained:
        return tuple(sorted({int(t) for t in trained}))
    try:
        run = metrics.get("runs", {}).get("stage2")
        meta = json.loads((results / run / "meta.json").read_text()) if run else {}
    except (OSError, ValueError):
        return None
    threads = meta.get("machine", {}).get("torch_threads")
    return (int(threads),) if isinstance(threads, int) else None
