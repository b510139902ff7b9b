"""Shared fixtures: a seeded rng and a tiny simulated experiment config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

# two BLAS pools on two cores slow each other down; tests stay single-threaded
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]

from shared.simulate.tiny import TINY  # noqa: E402  (after OMP_NUM_THREADS is set)


# the slowest files first, slowest first (their seconds under `make test`'s --durations): the two workers take whole
# files in this order (`--dist loadfile --no-loadscope-reorder`), so no long file starts last and leaves a core idle
SLOW_FIRST = ("test_compare.py", "test_plan.py", "test_faults.py", "test_bad_inputs.py", "test_cli.py", "test_matrix.py",
              "test_stage2.py", "test_shards.py", "test_methods.py", "test_soak.py", "test_export.py",
              "test_small_data.py", "test_concurrency.py", "test_lock_order.py", "test_lab_import_route.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: each file's tests in order


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A YAML config of a tiny simulated experiment whose outputs all live in tmp_path."""
    cfg = {**TINY, "data": {**TINY["data"], "root": str(tmp_path / "data")},
           "work_dir": str(tmp_path / "work"), "results_dir": str(tmp_path / "results")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ----------------------------------------------------------------------- the command line

CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
CLI_ENV.pop("N2P_FAILPOINT", None)


def run_cli(module: str, *args: str, failpoint: str | None = None, cwd: Path = ROOT,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in a subprocess; ``failpoint`` sets ``N2P_FAILPOINT``."""
    env = {**CLI_ENV, **({"N2P_FAILPOINT": failpoint} if failpoint else {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def write_tiny_config(folder: Path, data_root: Path, name: str = "tiny.yaml", **top) -> Path:
    """The tiny experiment's config with its work and results under ``folder`` and data in ``data_root``."""
    cfg = {**TINY, "data": {**TINY["data"], "root": str(data_root)}, "work_dir": str(folder / "work"),
           "results_dir": str(folder / "results"), **top}
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def comparable(metrics: dict) -> dict:
    """``metrics.json`` without its run records (``runs``: which run directories wrote it), the one
    part that differs between two runs of the same experiment."""
    return {k: v for k, v in metrics.items() if k != "runs"}


@dataclass
class Finished:
    config: Path  # the tiny experiment's config
    folder: Path  # holding work/, results/ and data/
    data: Path
    results: Path  # results/tiny
    work: Path  # work/tiny
    metrics: dict


@pytest.fixture(scope="session")
def tiny_finished(tmp_path_factory) -> Finished:
    """The tiny experiment after one uninterrupted stage 1 and stage 2: the reference the reliability tests
    compare with. Tests that change one of its files put it back."""
    folder = tmp_path_factory.mktemp("finished")
    config = write_tiny_config(folder, folder / "data")
    for module in ("stage1_decode", "stage2_generate"):
        r = run_cli(module, "run", "--config", str(config))
        assert r.returncode == 0, r.stderr[-3000:]
    results = folder / "results" / "tiny"
    return Finished(config, folder, folder / "data", results, folder / "work" / "tiny",
                    json.loads((results / "metrics.json").read_text()))
