"""One process per experiment: a second is refused naming the first; a killed holder frees the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.errors import UserError
from shared.locks import ExperimentLock

HOLD = """
import sys, time
from pathlib import Path
from shared.locks import ExperimentLock
ExperimentLock.acquire(Path(sys.argv[1]), "experiment 'x'")
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"in use by pid {holder.pid} .*wait for that run to finish"):
            ExperimentLock.acquire(tmp_path, "experiment 'x'")
    finally:
        holder.kill()
        holder.wait()
    lock = ExperimentLock.acquire(tmp_path, "experiment 'x'")  # the kernel dropped the dead holder's lock
    assert ExperimentLock.acquire(tmp_path, "experiment 'x'") is lock  # the same process may take it again
    lock.release()
    started = time.time()
    other = _holder(tmp_path)
    other.kill()
    other.wait()
    assert time.time() - started < 30


HOLD_SHARED = """
import sys, time
from pathlib import Path
from shared.locks import ExperimentLock
kind = sys.argv[3] if len(sys.argv) > 3 else "shared"
ExperimentLock.acquire(Path(sys.argv[1]), "store 'x'", shared=kind == "shared", writer=kind == "writer")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _shared_holder(folder: Path, seconds: float, kind: str = "shared") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD_SHARED, str(folder), str(seconds), kind], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_shared_holders_coexist_and_keep_an_exclusive_one_out(tmp_path):
    """Stage-2 runs of one store hold it shared, at once; stage 1 (exclusive) is refused while they run."""
    holder = _shared_holder(tmp_path, 60)
    try:
        mine = ExperimentLock(tmp_path, "store 'x'", shared=True)  # a second reader: granted
        mine.release()
        with pytest.raises(UserError, match=rf"store 'x' is in use by pid {holder.pid} .*wait for that run to finish"):
            ExperimentLock(tmp_path, "store 'x'")
    finally:
        holder.kill()
        holder.wait()


def test_writers_coexist_and_keep_readers_and_exclusive_holders_out(tmp_path):
    """Stage-1 processes sharing a store's work hold it as writers, at once; a stage 2 (shared) or an
    exclusive holder is refused while they run, and a writer while a stage 2 reads."""
    holder = _shared_holder(tmp_path, 60, "writer")
    try:
        mine = ExperimentLock(tmp_path, "store 'x'", writer=True)  # a second writer: granted
        mine.release()
        for kind in ({"shared": True}, {}):
            with pytest.raises(UserError, match=rf"store 'x' is in use by pid {holder.pid} "):
                ExperimentLock(tmp_path, "store 'x'", **kind)
    finally:
        holder.kill()
        holder.wait()
    reader = _shared_holder(tmp_path, 60)
    try:
        with pytest.raises(UserError, match=rf"store 'x' is in use by pid {reader.pid} "):
            ExperimentLock(tmp_path, "store 'x'", writer=True)
    finally:
        reader.kill()
        reader.wait()
    ExperimentLock(tmp_path, "store 'x'", writer=True).release()  # the killed reader left nothing behind


def test_a_reader_is_told_stage_1_still_fills_the_store_and_a_quiet_one_writes_nothing(tmp_path):
    """Stage 2 takes the store shared and ``quiet`` before it looks for arrays stage-1 writers have not written
    yet: refused naming the writer; granted once it has gone, writing nothing until it is named."""
    holder = _shared_holder(tmp_path, 60, "writer")
    try:
        with pytest.raises(UserError, match=rf"store 'x' is in use by pid {holder.pid} "):
            ExperimentLock.acquire(tmp_path, "store 'x'", shared=True, quiet=True)
    finally:
        holder.kill()
        holder.wait()
    before = sorted(p.name for p in tmp_path.iterdir())
    lock = ExperimentLock.acquire(tmp_path, "store 'x'", shared=True, quiet=True)  # gone: granted
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no holder's name written
        assert ExperimentLock.acquire(tmp_path, "store 'x'", shared=True) is lock  # a Run of it names it
        assert (tmp_path / f".lock.{os.getpid()}").read_text().startswith(f"pid {os.getpid()} on ")
    finally:
        lock.release()


def test_with_wait_for_locks_a_process_waits_instead_of_refusing(tmp_path, monkeypatch):
    from shared.locks import WAIT_FOR_LOCKS

    holder = _shared_holder(tmp_path, 3)
    started = time.time()
    monkeypatch.setenv(WAIT_FOR_LOCKS, "1")
    try:
        lock = ExperimentLock(tmp_path, "store 'x'")  # exclusive: granted once the reader has gone
        assert time.time() - started >= 2  # not before the reader's 3 s were up
        assert holder.wait(timeout=10) == 0  # the reader ended normally: it was waited for, not broken
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_refused_by_a_quiet_stage_2_is_not_told_a_stale_name(tmp_path):
    """A stage 2 checking its inputs holds the store shared and ``quiet`` (no name file: it must touch nothing); the
    ``.lock`` file still names its last exclusive holder, alive but long gone from the store (here this test's
    parent process). A stage-1 writer refused then is told of the stage 2, not of that holder."""
    (tmp_path / ".lock").write_text(f"pid {os.getppid()} on {__import__('socket').gethostname()} (`old run`, started "
                                    f"2020-01-01 00:00:00)")
    quiet = ExperimentLock(tmp_path, "store 'x'", shared=True, quiet=True)  # flocks of two open files conflict
    try:
        with pytest.raises(UserError) as refused:
            ExperimentLock(tmp_path, "store 'x'", writer=True)
    finally:
        quiet.release()
    assert "in use by a stage-2 run checking its inputs" in str(refused.value) and "old run" not in str(refused.value)


def test_a_lock_held_in_one_mode_is_not_handed_back_for_another(tmp_path):
    """The process's cache of its locks hands a lock back only in the mode asked for: a mismatch is an internal
    error (taking it anew would wait on, or be refused by, this process's own lock)."""
    lock = ExperimentLock.acquire(tmp_path, "store 'x'", shared=True, quiet=True)
    try:
        for mode in ({}, {"writer": True}):
            with pytest.raises(RuntimeError, match=r"^internal error: this process holds store 'x' as shared and "
                                                   r"asked for it as (exclusive|writer)$"):
                ExperimentLock.acquire(tmp_path, "store 'x'", **mode)
        assert ExperimentLock.acquire(tmp_path, "store 'x'", shared=True) is lock
    finally:
        lock.release()


def test_a_failed_acquire_in_order_releases_only_what_it_took(tmp_path):
    """``acquire_in_order`` rolls back when one folder cannot be taken (here ``c``, a file): the locks it took go,
    one the process held before the call (``b``) stays held."""
    from shared.locks import acquire_in_order

    (tmp_path / "c").write_text("not a folder")
    before = ExperimentLock.acquire(tmp_path / "b", "b")
    try:
        with pytest.raises(OSError):
            acquire_in_order({tmp_path / n: n for n in "cba"})
        assert ExperimentLock.acquire(tmp_path / "b", "b") is before and not before._fh.closed
        assert (tmp_path / "a" / ".lock").resolve() not in ExperimentLock._held
        ExperimentLock(tmp_path / "a", "a").release()  # released: another holder is granted it
    finally:
        before.release()


def test_under_acquire_in_order_a_fit_takes_no_folder_it_did_not_list(tmp_path):
    """``held_for_fit``: in a process that took its training folders in one order (stage 2), a folder among them
    is handed back and any other is an internal error; elsewhere (no such locks) it is taken, waiting."""
    from shared.locks import acquire_in_order, held_for_fit

    alone = held_for_fit(tmp_path / "alone", "a coder")  # no stage 2 here: taken
    alone.release()
    locks = acquire_in_order({tmp_path / "gen": "the generator", tmp_path / "coder": "a coder"})
    try:
        assert held_for_fit(tmp_path / "coder", "a coder") is locks[0]
        with pytest.raises(RuntimeError, match=r"^internal error: another coder is not among the folders this run "
                                               r"locked up front"):
            held_for_fit(tmp_path / "other", "another coder")
        assert not (tmp_path / "other").exists()
    finally:
        for lock in locks:
            lock.release()
    assert not ExperimentLock._ordered


def test_a_killed_holder_s_name_file_is_deleted_by_the_next_holder(tmp_path):
    """Shared holders and writers name themselves in ``.lock.<pid>`` / ``.lock-writers.<pid>``; a SIGKILLed
    one cannot delete its file, so the next holder deletes it (a file naming another host is left alone)."""
    elsewhere = tmp_path / ".lock.999999999"
    elsewhere.write_text("pid 999999999 on another-host (`stage2_generate run`, started 2026-01-01 00:00:00)")
    for kind, own in (("shared", ".lock"), ("writer", ".lock-writers")):
        holder = _shared_holder(tmp_path, 60, kind)
        named = tmp_path / f"{own}.{holder.pid}"
        assert named.is_file()
        holder.kill()
        holder.wait()
        ExperimentLock(tmp_path, "store 'x'").release()
        assert not named.exists()
    assert elsewhere.is_file()
