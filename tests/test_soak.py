"""The randomized soak test's short version (the whole one is ``make soak``, tools/soak.py): rounds of stage-1
shards and stage-2 runs started in a random order, some SIGKILLed, reruns finishing the work; every round's
store, tables and checkpoints equal the serial run's and nothing is left behind. And the soak's own checks:
they see a changed byte, a leftover file and a held lock, and a failing round names its replay."""

from __future__ import annotations

import fcntl
import re
import shutil
import time
from pathlib import Path

from conftest import Finished, run_cli

SEED = 0
ROUNDS = 5
STAGE2_EVERY = 5  # stage 2 in round 0 only: every round with stage 2 would take the short version past a minute
PARTS = [0, 6000]  # whole layers, or conv3_4 in 3 parts (one more serial stage 1 to hold those rounds' scores to)
SHARDS = 3


def test_short_soak_every_round_equals_the_serial_run(tiny_finished: Finished, tmp_path):
    """In a process of its own: the soak forks its processes, which a test process (threads) should not."""
    started = time.time()
    r = run_cli("tools.soak", "--rounds", str(ROUNDS), "--seed", str(SEED), "--folder", str(tmp_path / "soak"),
                "--reference", str(tiny_finished.folder), "--stage2-every", str(STAGE2_EVERY), "--parts",
                *map(str, PARTS), "--shards", str(SHARDS), "--bound", "120", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    line = r.stdout.strip().splitlines()[-1]
    print(f"{line} (the test: {time.time() - started:.0f} s)")
    rounds, = map(int, re.findall(r"^soak: (\d+) rounds", line))
    processes, reruns = map(int, re.search(r"(\d+) processes .*of them (\d+) reruns", line).groups())
    killed = [int(n) for n in re.search(r"SIGKILLed \((\d+) stage 1, (\d+) stage 2\)", line).groups()]
    assert rounds == ROUNDS and "every round equal to the serial run" in line
    assert killed[0] >= 1 and killed[1] >= 1 and reruns >= 2 and processes > 2 * ROUNDS, line
    assert not list((tmp_path / "soak").glob("round-*"))  # a passed round's folder is deleted


def test_the_checks_see_a_changed_byte_a_leftover_and_a_held_lock(tiny_finished: Finished, tmp_path):
    from tools.soak_checks import arrays, leftovers, results_differences, store_differences

    results = tmp_path / "results"
    shutil.copytree(tiny_finished.results, results)
    assert results_differences(results, tiny_finished.results) == []
    csv = results / "decoding.csv"
    csv.write_bytes(csv.read_bytes().replace(b"0.", b"1.", 1))
    (results / "per_image.json").unlink()
    found = results_differences(results, tiny_finished.results)
    assert any("missing ['per_image.json']" in f for f in found) and "results file decoding.csv differs" in found[-1]
    work = tmp_path / "work"
    shutil.copytree(tiny_finished.work / "features", work / "features")
    reference = arrays(tiny_finished.work)
    assert store_differences(work, reference, tiny_finished.work) == []
    fc7 = next((work / "features" / "decoded").rglob("fc7/natural.h5"))
    import h5py

    with h5py.File(fc7, "r+") as fh:
        fh["features"][0, 0] += 1e-6
    assert store_differences(work, reference, tiny_finished.work) == [
        f"array {fc7.relative_to(work / 'features')} differs from the serial run's"]
    (work / ".natural.h5.tmp-123").write_text("")
    (work / ".lock-writers.123").write_text("pid 123")
    with open(work / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert leftovers(work) == ["lock file work/.lock is still locked",
                                   "lock holder's name file work/.lock-writers.123 left behind",
                                   "temporary file work/.natural.h5.tmp-123 left behind"]


def test_a_failing_round_names_its_seed_round_and_replay(tmp_path, monkeypatch):
    import tools.soak as soak_module

    monkeypatch.setattr(soak_module, "reference", lambda folder, given: None)
    monkeypatch.setattr(soak_module, "play_round", lambda seed, r, *a: ["array x differs", "y"] if r == 2 else [])
    for r in range(4):
        (tmp_path / f"round-{r:03d}").mkdir()
    opts = soak_module.Options(stage2_every=3, spawn=True)
    tally, failures = soak_module.soak(4, 7, tmp_path, opts=opts)
    assert failures[0].startswith("soak: seed 7 round 2: array x differs (and 1 more); its folder ")
    assert failures[0].endswith("replay: python -m tools.soak --seed 7 --round 2 --stage2-every 3 --spawn")
    assert failures[1:] == ["  y"] and tally.failed == 1
    assert [p.name for p in sorted(Path(tmp_path).glob("round-*"))] == ["round-002", "round-003"]  # stopped at 2


# ------------------------------------------------------------------ what the soak found, one case each

def test_a_killed_writer_s_run_folder_is_swept_once_no_process_holds_the_experiment(tmp_path):
    """A stage-1 process killed while writing its run folder's ``meta.json`` leaves its temporary file; a stage-1
    writer cannot sweep run folders while others may write theirs, so the last one out sweeps them."""
    from shared.runs import sweep_when_alone

    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    left = results / "runs" / "stage1-002" / ".meta.json.tmp-999999999"  # no such process
    left.parent.mkdir(parents=True)
    left.write_text('{"stage": "st')
    with open(work / ".lock-writers", "a+") as other:  # a writer still running: nothing is swept
        fcntl.flock(other, fcntl.LOCK_SH)
        sweep_when_alone(work, results)
        assert left.is_file()
    sweep_when_alone(work, results)
    assert not left.exists()


def test_stage2_refuses_a_layer_whose_stage1_process_stopped_before_its_done_json(tiny_finished: Finished, tmp_path):
    """A stage-1 process killed after a layer's arrays but before its ``done.json``: stage 2 ran on that layer,
    then stage 1's rerun decoded it again, dropped stage 2's results and the next stage 2 trained a second
    generator (soak seed 2 round 10). Stage 2 now asks for stage 1 to be rerun first."""
    import pytest

    from conftest import write_tiny_config
    from shared.config import load_config
    from shared.errors import UserError
    from shared.store import ExperimentStore
    from stage2_generate.pipeline import _check_inputs

    shutil.copytree(tiny_finished.work / "features", tmp_path / "work" / "tiny" / "features")
    cfg = load_config(write_tiny_config(tmp_path, tiny_finished.data), [])
    store = ExperimentStore(cfg)
    _check_inputs(cfg, store, [])
    (store.layer_dir("sub-01", "VC", "fc7") / "done.json").unlink()
    with pytest.raises(UserError, match=r"stage 1 has not finished sub-01 VC fc7: .*; rerun stage 1$"):
        _check_inputs(cfg, store, [])
