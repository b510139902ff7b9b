"""Two processes started at once on the same experiment (each stage): one finishes, the other stops
with one line naming the running one, or both finish in separate run directories; never a mixed
result. The finished result equals, byte for byte, an earlier run with the same seed (run records
aside), and its run metadata holds what repeating it needs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import CLI_ENV, ROOT, Finished, comparable, write_tiny_config



@pytest.fixture(scope="module")
def raced(tiny_finished: Finished, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("raced")
    config = write_tiny_config(folder, tiny_finished.data)
    out = {"folder": folder, "stages": {}}
    for module in ("stage1_decode", "stage2_generate"):
        procs = [subprocess.Popen([sys.executable, "-m", module, "run", "--config", str(config)], cwd=ROOT,
                                  env=CLI_ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
                 for _ in range(2)]
        out["stages"][module] = [(p.pid, p.wait(timeout=600), p.stderr.read()) for p in procs]
    return out


@pytest.mark.parametrize("module, stage", [("stage1_decode", "stage1"), ("stage2_generate", "stage2")])
def test_two_runs_at_once_never_mix(raced, module, stage):
    runs = raced["stages"][module]
    codes = sorted(rc for _, rc, _ in runs)
    assert codes in ([0, 0], [0, 2]), [err[-2000:] for _, _, err in runs]
    pids = [pid for pid, _, _ in runs]
    for (pid, rc, err), other in zip(runs, reversed(pids)):
        if rc == 2:
            lines = err.strip().splitlines()
            assert lines[-1].startswith("error: experiment 'tiny'") and f"is in use by pid {other}" in lines[-1]
            assert "Traceback" not in err and sum(ln.startswith("error:") for ln in lines) == 1
    results = raced["folder"] / "results" / "tiny"
    dirs = sorted(p for p in (results / "runs").iterdir() if p.name.startswith(stage))
    assert len(dirs) == codes.count(0)  # a refused process made no run directory
    for d in dirs:  # every run directory is a finished run
        assert "finished" in json.loads((d / "meta.json").read_text())
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["runs"][stage] in {f"runs/{d.name}" for d in dirs}


def test_same_seed_gives_byte_identical_metrics(raced, tiny_finished):
    """Apart from ``runs`` (which run directories wrote it), metrics.json is the same bytes."""
    ours = json.loads((raced["folder"] / "results" / "tiny" / "metrics.json").read_text())
    assert "reconstruction" in ours and "decoding" in ours
    dump = lambda m: json.dumps(comparable(m), indent=2)  # noqa: E731 - how runs.py writes it
    assert dump(ours) == dump(tiny_finished.metrics)


def test_run_metadata_holds_what_repeating_a_run_needs(raced):
    runs = raced["folder"] / "results" / "tiny" / "runs"
    for d in sorted(runs.iterdir()):
        meta = json.loads((d / "meta.json").read_text())
        assert {"command", "seed", "device", "git_revision", "versions", "inputs", "machine", "started",
                "finished"} <= set(meta)
        assert {"python", "numpy", "torch", "torchvision", "bdpy", "h5py", "sklearn"} <= set(meta["versions"])
        assert {"host", "platform", "torch_threads"} <= set(meta["machine"])
        assert all(len(v["sha256_16"]) == 16 for v in meta["inputs"].values()) and meta["inputs"]
        config = yaml.safe_load((d / "config.yaml").read_text())
        assert config["seed"] == meta["seed"] == 0 and config["experiment"] == "tiny"


HOLD = """
import sys, time
from pathlib import Path
from shared.locks import ExperimentLock
ExperimentLock.acquire(Path(sys.argv[1]), "experiment 'tiny'")
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("module", ["stage1_decode", "stage2_generate"])
def test_a_run_is_refused_while_another_holds_the_experiment(module, tiny_finished):
    """The deterministic half of the race above: while a process holds the lock, the CLI stops at once,
    naming it, with nothing written."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tiny_finished.work)], cwd=ROOT, env=CLI_ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        runs = sorted((tiny_finished.results / "runs").iterdir())
        r = subprocess.run([sys.executable, "-m", module, "run", "--config", str(tiny_finished.config)], cwd=ROOT,
                           env=CLI_ENV, capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: experiment 'tiny' ({tiny_finished.work}) is in use "
                                                        f"by pid {holder.pid}")
    assert sorted((tiny_finished.results / "runs").iterdir()) == runs
