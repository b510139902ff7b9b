"""One process per experiment: a second is refused naming the first; a killed holder frees the lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.errors import UserError
from shared.runs import ExperimentLock

HOLD = """
import sys, time
from pathlib import Path
from shared.runs import ExperimentLock
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
