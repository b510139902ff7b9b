"""A parent whose child process dies ends within seconds, in one line naming the child, its exit status and,
for a missing package, the install command: the benchmarks (``shared.children.run_in_child``), ``compare
--jobs`` and ``compare --launcher slurm``. The children here are stand-ins that die at once (no stage runs)."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from shared.children import exit_text, install_command, missing_module, run_in_child
from shared.errors import UserError

MISSING = "no_such_module_n2p"  # a module no environment has
BOUND_S = 10  # "within seconds": the children below die in well under a second


# the children: module-level, so a spawned process imports them from this file (no torch in these)

def _import_fails(*_args):
    import no_such_module_n2p  # noqa: F401


def _killed(*_args):
    os.kill(os.getpid(), signal.SIGKILL)


def _returns(*args):
    return {"args": list(args)}


def test_exit_text_install_command_and_missing_module():
    assert exit_text(3) == "exited with status 3"
    assert exit_text(-9).startswith("was killed by signal 9 (SIGKILL")
    assert exit_text(-15) == "was killed by signal 15 (SIGTERM)"
    assert install_command("himalaya.backend") == "pip install -e '.[bench]' in the repository"
    assert install_command("submitit") == "pip install -e '.[cluster]' in the repository"
    assert install_command("sklearn.linear_model").startswith("pip install -e . in the repository")
    assert install_command("stage2_generate").startswith("pip install -e . in the repository")
    assert install_command("foo_bar.baz") == "pip install foo_bar"
    assert install_command("yaml").startswith("pip install -e .")
    tail = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'himalaya'\n"
    assert missing_module(1, tail) == "himalaya" and missing_module(2, "error: ROI 'V7' is not in the data") is None


@pytest.mark.parametrize("status, output", [
    (-9, "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'himalaya'\n"),  # killed
    (1, "WARNING himalaya: ModuleNotFoundError: No module named 'himalaya'; using sklearn\n"  # a handled import...
        "Traceback (most recent call last):\n  ...\nValueError: bad shape\n"),  # ...then another failure
    (1, "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'himalaya'\n\n"
        "During handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n"
        "  ...\nRuntimeError: no backend\n"),
    (2, "error: ROI 'V7' is not in the data (ModuleNotFoundError: No module named 'x' was logged earlier)\n"),
])
def test_a_child_is_told_to_install_a_module_only_when_its_import_ended_it(status, output):
    """``missing_module``: exit status 1 and a traceback ending with the ``ModuleNotFoundError`` (its last
    non-empty line); the error's text anywhere else, or a child killed by a signal, is not a missing package."""
    from stage2_generate.compare.runner import _death

    assert missing_module(status, output) is None
    assert "no module named" not in _death("variant 'V1', stage 1", status, output, "python -m x run")


def test_a_cluster_job_is_told_to_install_a_module_only_when_its_import_ended_it():
    """In a job's log the stage's output comes before submitit's report of the job's exception (its own
    traceback, ending with ``StageFailed``): the stage's part is read, with the exit status ``StageFailed`` names."""
    from stage2_generate.compare.slurm import _import_failure

    stage = "Traceback (most recent call last):\n  File \"x.py\"\nModuleNotFoundError: No module named 'himalaya'\n"
    job = ("submitit ERROR (2026-01-01 00:00:00,000) - Submitted job triggered an exception\n"
           "Traceback (most recent call last):\n  File \"slurm.py\"\n"
           "stage2_generate.compare.slurm.StageFailed: python -m x run --config c.yaml {}\n")
    failed = "Job (task=0) failed during processing with trace:\n---\n{}\n---\nYou can check full logs"
    for how, expect in [("exited with status 1", "himalaya"), ("was killed by signal 9 (SIGKILL)", None)]:
        assert _import_failure(stage + job.format(how), failed.format(job.format(how))) == expect
    assert _import_failure("", failed.format(stage)) == "himalaya"  # the job itself failed on the import


def _cut_off(*_args):
    """Dies halfway through sending its result: a message's header promising 1000 bytes, 10 of them, SIGKILL."""
    import gc
    import struct
    from multiprocessing.connection import Connection

    (conn,) = [o for o in gc.get_objects() if isinstance(o, Connection) and o.writable]
    conn._send(struct.pack("!i", 1000) + b"x" * 10)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_killed_halfway_through_its_result_is_one_line():
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"^child \(pid \d+\) was killed by signal 9 \(SIGKILL.* before it sent its "
                                        r"result$"):
        run_in_child(mp.get_context("spawn"), _cut_off, (), "child")
    assert time.monotonic() - t0 < BOUND_S


def test_a_child_that_returns_hands_back_its_value():
    assert run_in_child(mp.get_context("spawn"), _returns, (1, "a"), "child") == {"args": [1, "a"]}


@pytest.fixture
def bench_ridge(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import bench_ridge

    return bench_ridge


@pytest.mark.parametrize("child, message", [
    (_import_fails, rf"exited with status 1: no module named '{MISSING}'; install it with pip install {MISSING}$"),
    (_killed, r"was killed by signal 9 \(SIGKILL, sent by hand or by the kernel's out-of-memory killer\) before "
              r"it sent its result$"),
])
def test_a_benchmark_whose_child_dies_ends_at_once_in_one_line(bench_ridge, monkeypatch, capsys, child, message):
    # the benchmark as its command line runs it, each (method, count) in a spawned child: here one that dies
    monkeypatch.setattr(bench_ridge, "run_method", child)
    monkeypatch.setattr(sys, "argv", ["bench_ridge.py", "--methods", "sklearn", "--counts", "10,20",
                                      "--layer-methods", ""])
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        bench_ridge.main()
    assert time.monotonic() - t0 < BOUND_S
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert re.match(r"error: the child process of sklearn on 10 units \(pid \d+\) " + message, err[0]), err[0]


def test_a_quick_benchmark_missing_a_package_says_what_to_install(bench_ridge, monkeypatch):
    monkeypatch.setattr(bench_ridge, "run_method", _import_fails)
    args = type("Args", (), {"quick": True})()
    with pytest.raises(UserError, match=rf"^sklearn on 10 units: no module named '{MISSING}'; install it with "):
        bench_ridge.timed_run(None, args, "sklearn", 10)


# ------------------------------------------------------------------ compare --jobs and --launcher slurm

def _die(how: str) -> str:
    return "os.kill(os.getpid(), signal.SIGKILL)" if how == "killed" else f"import {MISSING}"


DEATHS = [("killed", r"was killed by signal 9 \(SIGKILL, sent by hand or by the kernel's out-of-memory killer\); "
                     r"rerun it alone with python -m stage1_decode run --config .*config\.yaml$"),
          ("import", rf"exited with status 1: no module named '{MISSING}'; install it with pip install {MISSING}$")]


@pytest.mark.parametrize("how, message", DEATHS)
def test_compare_jobs_whose_stage_dies_stops_at_once_in_one_line(tmp_path, tiny_config, monkeypatch, how, message):
    """Two variants at once; variant V1's stage 1 dies, base's would run a minute: compare stops within seconds
    (base's stage terminated), naming V1, its stage and how it ended."""
    import stage1_decode  # noqa: F401 - the real package stays this process's; only the children see the stand-in
    from stage2_generate.compare.runner import run_variants
    from stage2_generate.compare.spec import load_compare

    fake = tmp_path / "cwd" / "stage1_decode"  # `python -m stage1_decode` from this folder runs the stand-in
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import os, signal, sys, time\nimport yaml\n"
        "cfg = yaml.safe_load(open(sys.argv[sys.argv.index('--config') + 1]))\n"
        f"if cfg['data']['rois'] == ['V1']:\n    {_die(how)}\ntime.sleep(60)\n")
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "base": tiny_config.name,
                                    "variants": {"base": {}, "V1": {"data.rois": ["V1"]}}}))
    variants = load_compare(path).variants
    monkeypatch.chdir(fake.parent)
    t0 = time.monotonic()
    with pytest.raises(UserError) as failed:
        run_variants(variants, jobs=2)
    assert time.monotonic() - t0 < BOUND_S
    text = str(failed.value)
    assert "\n" not in text and re.match(r"variant 'V1', stage 1 " + message, text), text


@pytest.mark.parametrize("how, message", DEATHS)
def test_a_cluster_job_whose_stage_dies_is_one_line(tmp_path, monkeypatch, how, message):
    """A stage-1 job (submitit's local executor) whose stage dies: one line naming the variant, the stage's
    exit status (or missing module and its install command) and the job's log, within seconds."""
    pytest.importorskip("submitit")
    from stage2_generate.compare.slurm import SlurmSettings, _Cluster

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "dying_stage.py").write_text(f"import os, signal\n{_die(how)}\n")
    monkeypatch.chdir(cwd)  # the job runs `python -m dying_stage run --config ...` from compare's folder
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the job imports this checkout's slurm.py
    cluster = _Cluster(tmp_path / "jobs", SlurmSettings(time_min=5), "local", "tiny")
    t0 = time.monotonic()
    job = cluster.submit("dying_stage", Path("config.yaml"), "variant 'V1', stage 1", "s1", [])
    with pytest.raises(UserError) as failed:
        cluster.wait([job], lambda j: None)
    assert time.monotonic() - t0 < BOUND_S
    text = str(failed.value)
    how_ended = message.split("; rerun")[0].rstrip("$")
    assert "\n" not in text and re.match(r"variant 'V1', stage 1 failed on the cluster \(job \d+\): python -m "
                                         r"dying_stage run --config config\.yaml " + how_ended, text), text
    assert text.endswith("_log.err")
