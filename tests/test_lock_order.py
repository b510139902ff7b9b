"""Issue 28's lock holes: a process that holds several locks takes them in one global order (no deadlock between
``--jobs`` variants that list ROIs or methods in opposite orders); stage 2 holds the store shared before it reads
any of it; stage-1 processes that would split one store's layers otherwise are refused in one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CLI_ENV, ROOT
from shared.errors import UserError
from shared.locks import ExperimentLock
from shared.split_lock import SplitLock

# ExperimentLock.acquire slowed down: each lock is held a while before the next is asked for, so that two
# processes asking for the same locks in opposite orders would each hold one the other waits for
SLOW = """
import sys, time
from pathlib import Path
from shared import locks
real = locks.ExperimentLock.acquire.__func__
def slow(cls, folder, *args, **kwargs):
    lock = real(cls, folder, *args, **kwargs)
    print("took", Path(folder).resolve(), flush=True)
    time.sleep(0.3)
    return lock
locks.ExperimentLock.acquire = classmethod(slow)
"""

FOLDERS = SLOW + """
locks.acquire_in_order({Path(p): Path(p).name for p in sys.argv[1:]})  # asked for in the order given
"""


def _both(script: str, *argvs: list[str], bound: float = 60) -> list[list[str]]:
    """Run ``script`` in two processes at once (one per argv); their output lines, once both have ended within
    ``bound`` seconds (a deadlock fails the test instead of hanging it)."""
    procs = [subprocess.Popen([sys.executable, "-c", script, *argv], cwd=ROOT, env=CLI_ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    started = time.time()
    try:
        outs = [p.communicate(timeout=max(1.0, bound - (time.time() - started))) for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"two processes taking the same locks in opposite orders did not end within {bound} s: deadlock")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [out.splitlines() for out, _ in outs]


def test_locks_asked_for_in_opposite_orders_are_taken_in_one_order(tmp_path):
    names = ["a", "b", "c"]
    paths = [str(tmp_path / n) for n in names]
    started = time.time()
    outs = _both(FOLDERS, paths, paths[::-1], bound=30)
    assert time.time() - started < 30
    assert all([Path(ln.split()[1]).name for ln in out] == names for out in outs)  # sorted, whatever the order asked


def _training_folders(config: Path, work: Path, rois: str, run: str) -> list[str]:
    """The folders a stage 2 of ``config`` with these ROIs and methods trains in (``pipeline.training_folders``,
    from its methods' ``lock_folders``), in the order it lists them."""
    import numpy as np

    from shared.config import load_config
    from stage2_generate import methods as registry
    from stage2_generate.pipeline import training_folders

    cfg = load_config(config, [f"data.rois={rois}", f"methods.run={run}", f"work_dir={work}"])
    ctx = registry.Context.of(cfg, store=None, device="cpu", train_images=np.zeros((4, 3, 32, 32), np.float32),
                              train_names=list("abcd"), channels=3)
    methods = [c(ctx) for c in registry.selected(cfg.methods.run, False)]
    return [str(f.resolve()) for f in training_folders(cfg.work_path / "generator" / "main", "main", methods)]


def test_end_to_end_variants_in_opposite_orders_do_not_deadlock(tiny_finished, tmp_path, monkeypatch):
    """Two variants of one store, the second listing the ROIs and the methods (end_to_end, vae) in the first's
    opposite order, ask for the same training folders in opposite orders: the generator's, end_to_end's of each
    ROI, the VAE's coder. (The generator key names the ROI list in its order, so that the ROI half of the case
    is built by keying each end_to_end generator on the sorted list, as if the variants shared them.) Two
    processes take them as stage 2 does (``acquire_in_order``), each lock held a while before the next is asked
    for: both end within the bound, having taken them in one order."""
    from dataclasses import replace

    from stage2_generate.methods import end_to_end

    real_key = end_to_end._training

    def key_of_sorted_rois(cfg, subject, roi, *args):
        return real_key(replace(cfg, data=replace(cfg.data, rois=sorted(cfg.data.rois))), subject, roi, *args)

    monkeypatch.setattr(end_to_end, "_training", key_of_sorted_rois)
    work = tmp_path / "work"
    asked = [_training_folders(tiny_finished.config, work, "[VC, V1]", "[end_to_end, vae]"),
             _training_folders(tiny_finished.config, work, "[V1, VC]", "[vae, end_to_end]")]
    assert len(asked[0]) == 4 and set(asked[0]) == set(asked[1])  # the same four folders...
    assert asked[0][1:] == asked[1][1:][::-1]  # ...after the generator's, asked for in opposite orders
    started = time.time()
    outs = _both(FOLDERS, *asked, bound=30)
    assert time.time() - started < 30
    taken = [[ln.split()[1] for ln in out] for out in outs]
    assert taken[0] == taken[1] == sorted(asked[0])


class _Stop(Exception):
    """Ends the stage-2 run under test once it has shown what it was to show."""


def test_stage_2_holds_the_store_before_it_reads_it_and_trains_under_every_lock(tiny_finished, tmp_path,
                                                                                 monkeypatch):
    """Spies on every lock stage 2 takes and every look at the store: the store's shared lock comes first, and
    the folders it trains in (the generator's and end_to_end's per subject and ROI) are asked for at once."""
    import stage2_generate.pipeline as pipeline
    from shared.config import load_config
    from shared.store import ExperimentStore, FeatureStore

    events: list[tuple] = []
    real_init = ExperimentLock.__init__

    def lock_init(self, folder, what, shared=False, *args, **kwargs):
        real_init(self, folder, what, shared, *args, **kwargs)
        events.append(("lock", Path(folder).resolve(), shared))

    def spy(name, real):
        def read(self, *args, **kwargs):
            events.append(("read", name))
            return real(self, *args, **kwargs)
        return read

    asked = {}

    def in_order(folders):
        asked.update(folders)
        raise _Stop

    monkeypatch.setattr(ExperimentLock, "__init__", lock_init)
    for cls, name in [(ExperimentStore, "true_file"), (ExperimentStore, "decoded_file"), (FeatureStore, "open")]:
        monkeypatch.setattr(cls, name, spy(name, getattr(cls, name)))
    monkeypatch.setattr(pipeline, "acquire_in_order", in_order)
    cfg = load_config(tiny_finished.config, [f"results_dir={tmp_path}", "methods.run=[end_to_end]"])
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(_Stop):
        pipeline.run(cfg)
    assert events[0] == ("lock", cfg.work_path.resolve(), True), events[:3]  # before any look at the store
    assert any(e[0] == "read" for e in events)
    # released when the run stopped: the store's lock, its Run's lock of the results folder and its log handler
    assert not {(p / ".lock").resolve() for p in (cfg.work_path, cfg.results_path)} & set(ExperimentLock._held)
    assert logging.getLogger().handlers == handlers
    generators = {p.parent.name for p in asked}
    assert generators == {"generator"} and len(asked) == 1 + len(cfg.data.subjects) * len(cfg.data.rois)
    assert sum("end_to_end generator" in what for what in asked.values()) == len(asked) - 1


def test_stage_1_that_fails_releases_its_split_and_its_run(tiny_finished, tmp_path, monkeypatch):
    """A stage 1 that fails after taking its split (``SplitLock``) and its run (``Run``: the store's writer lock,
    a log handler) releases all three: another split is granted at once, in this same process."""
    import stage1_decode.pipeline as stage1
    from shared.config import load_config
    from shared.store import ExperimentStore

    def fail(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(stage1, "compute_true_features", fail)
    cfg = load_config(tiny_finished.config, [f"results_dir={tmp_path}"])
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(_Stop):
        stage1.run(cfg)
    assert logging.getLogger().handlers == handlers
    assert (cfg.work_path / ".lock").resolve() not in ExperimentLock._held
    folder = ExperimentStore(cfg).decoder_dir()
    SplitLock(folder, 1000, 1000, "the layers of 'tiny'").release()  # refused if the failed run still held its own
    assert not list(folder.glob(".split-*"))  # each split's file removed by its last holder


def test_processes_whose_parts_differ_are_refused_naming_both(tmp_path):
    """Parts are compared by their size, ``decoder.part_units`` rounded up to whole ``decoder.chunk_units`` (0:
    whole layers, whatever the chunk): splits with the same parts are granted side by side. Flocks of one file
    opened twice conflict within a process as between processes: one process stands for two here."""
    held = SplitLock(tmp_path, 2000, 1000, "the layers of 'x'")
    try:
        for part, chunk in [(1000, 1000), (2500, 1000), (2000, 3000), (0, 1000)]:  # parts of 1000, 3000, 3000, all
            with pytest.raises(UserError) as exc:
                SplitLock(tmp_path, part, chunk, "the layers of 'x'")
            message = str(exc.value)
            assert "\n" not in message and message.startswith("the layers of 'x' are being decoded by another "
                                                              "process with decoder.part_units=2000 and "
                                                              "decoder.chunk_units=1000, this one has "
                                                              f"decoder.part_units={part} and "
                                                              f"decoder.chunk_units={chunk};")
        for part, chunk in [(2000, 1000), (1500, 1000), (2000, 500), (1001, 1000)]:  # parts of 2000 units each
            SplitLock(tmp_path, part, chunk, "the layers of 'x'").release()
    finally:
        held.release()
    SplitLock(tmp_path, 1000, 1000, "the layers of 'x'").release()  # the other has ended: a rerun splits anew
    whole = SplitLock(tmp_path, 0, 8192, "the layers of 'x'")
    SplitLock(tmp_path, 0, 4096, "the layers of 'x'").release()  # whole layers: chunk_units splits nothing
    whole.release()
    assert not list(tmp_path.iterdir())  # every split's file removed by its last holder, and every name file


def test_a_split_file_removed_by_its_last_holder_is_never_held_stale(tmp_path):
    """A process that opened a split's file just before its last holder removed it holds, once it has its lock,
    the file now at the path (``_hold`` checks): never the removed one, which no other process would see."""
    first = SplitLock(tmp_path, 2000, 1000, "the layers of 'x'")
    stale = open(first.path)  # as a process opening it before the removal would have
    first.release()
    assert not first.path.exists()
    second = SplitLock(tmp_path, 2000, 1000, "the layers of 'x'")
    try:
        assert os.path.samestat(os.fstat(second._fh.fileno()), os.stat(second.path))
        assert not os.path.samestat(os.fstat(stale.fileno()), os.stat(second.path))
        with pytest.raises(UserError):
            SplitLock(tmp_path, 1000, 1000, "the layers of 'x'")  # it sees the second holder's file
    finally:
        stale.close()
        second.release()


HOLD_SPLIT = """
import sys
from pathlib import Path
from shared.split_lock import SplitLock
lock = SplitLock(Path(sys.argv[1]), 2000, 1000, "x")
print("held", flush=True)
sys.stdin.readline()  # held until the test closes this process's input (or kills it)
lock.release()
"""


def test_stage_1_with_other_part_units_than_a_running_one_stops_in_one_line(tiny_finished):
    from shared.config import load_config
    from shared.store import ExperimentStore

    folder = ExperimentStore(load_config(tiny_finished.config)).decoder_dir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SPLIT, str(folder)], cwd=ROOT, env=CLI_ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        runs = sorted((tiny_finished.results / "runs").iterdir())
        r = subprocess.run([sys.executable, "-m", "stage1_decode", "run", "--config", str(tiny_finished.config)],
                           cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=300)
        holder.stdin.close()  # the holder releases its split and ends
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
    assert not list(folder.glob(".split-*"))  # its split's file and name file removed on release
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the layers of experiment 'tiny' ({folder}) are being decoded by pid {holder.pid} "
                           f"on "), last
    assert (") with decoder.part_units=2000 and decoder.chunk_units=1000, this one has decoder.part_units=0 and "
            "decoder.chunk_units=1000;") in last, last
    assert sorted((tiny_finished.results / "runs").iterdir()) == runs  # refused before it wrote anything
