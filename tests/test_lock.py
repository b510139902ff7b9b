"""One process per experiment: a second is refused naming the first; a killed holder frees the lock."""

from __future__ import annotations

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


def test_a_reader_is_told_stage_1_still_fills_the_store(tmp_path):
    """Stage 2 checks for stage-1 writers before it looks for arrays they have not written yet."""
    ExperimentLock.wait_for_writers(tmp_path / "none", "store 'x'")  # no store yet: nothing to say, nothing made
    assert not (tmp_path / "none").exists()
    holder = _shared_holder(tmp_path, 60, "writer")
    try:
        with pytest.raises(UserError, match=rf"store 'x' is in use by pid {holder.pid} "):
            ExperimentLock.wait_for_writers(tmp_path, "store 'x'")
    finally:
        holder.kill()
        holder.wait()
    ExperimentLock.wait_for_writers(tmp_path, "store 'x'")  # gone: granted


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
