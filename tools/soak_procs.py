"""The soak test's processes (``tools/soak.py``): each started at its delay, killed from here when its time
comes, and timed; how long its log says it waited for locks.

A process is a stage's command line (``python -m stage1_decode run --config ...``) in a process of its own
(its own pid, session, file descriptors and flocks), started one of two ways: forked from this process once
it has imported both stages (``preload``; the default: a process starts in milliseconds, not in the seconds
torch, torchvision and scikit-learn take to import) or, with ``spawn``, as a fresh interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"stage1": "stage1_decode", "stage2": "stage2_generate", "compare": "stage2_generate"}


@dataclass
class Launch:
    """One process of a round: which stage (``stage1``, ``stage2``, or ``compare``: its arguments name the
    compare file beside the round's config), its extra arguments, when it starts and how it is killed."""

    stage: str
    args: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds after its phase starts
    failpoint: str | None = None  # N2P_FAILPOINT
    kill_after: float | None = None  # SIGKILL from here, seconds after it starts

    @property
    def label(self) -> str:
        faults = [*([self.failpoint] if self.failpoint else []),
                  *([f"kill at {self.kill_after:.1f} s"] if self.kill_after is not None else [])]
        return f"{self.stage}{''.join(' ' + a for a in self.args)}" + (f" [{', '.join(faults)}]" if faults else "")


@dataclass
class Ended:
    """A launched process once it has ended."""

    launch: Launch
    rc: int
    seconds: float
    waited: float  # seconds its log says it waited for locks
    log: Path
    timer_killed: bool = False
    lingering: bool = False  # it left a process of its group running

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL

    def last_line(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""


def _log_wait(log: Path, end: float) -> float:
    """Seconds a process's log says it waited for locks: from each ``waiting for`` line to its next line."""
    def clock(line: str) -> float | None:
        head = line[:8]
        if len(head) == 8 and head[2] == head[5] == ":" and head.replace(":", "").isdigit():
            return int(head[:2]) * 3600 + int(head[3:5]) * 60 + int(head[6:8])
        return None

    lines = [ln for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if clock(ln) is not None]
    finish = time.localtime(end)
    total = 0.0
    for k, line in enumerate(lines):
        if "waiting for" in line:
            stop = clock(lines[k + 1]) if k + 1 < len(lines) else \
                finish.tm_hour * 3600 + finish.tm_min * 60 + finish.tm_sec
            total += (stop - clock(line)) % 86400
    return total


HEAVY = ["torch", "torchvision", "sklearn.model_selection", "h5py", "matplotlib.pyplot", "shared.featnet",
         "shared.simulate.experiment", "stage1_decode.cli", "stage1_decode.decode", "stage1_decode.decoders",
         "stage2_generate.cli", "stage2_generate.pipeline", "stage2_generate.train", "stage2_generate.methods"]


def preload() -> None:
    """Import what the stages import, once, so that forked processes start with it (one CPU thread each)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in HEAVY:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class Forked:
    """A stage's command line run in a child forked from this process (``preload`` first); as ``Popen``:
    ``pid``, ``poll()``, ``wait()``, ``returncode`` (minus the signal that killed it)."""

    def __init__(self, module: str, args: list[str], env: dict, log: Path):
        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:
            _child(module, args, env, log)

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self) -> int:
        return self._reap(0)


def _child(module: str, args: list[str], env: dict, log: Path) -> None:
    """In the forked child: become ``python -m <module> <args>`` with ``env``, stderr into ``log``; never
    returns (the exit status is the command line's)."""
    code = 1
    try:
        os.setsid()
        os.chdir(ROOT)
        os.dup2(os.open(log, os.O_WRONLY | os.O_APPEND), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.environ.clear()
        os.environ.update(env)
        cli = importlib.import_module(f"{module}.cli")
        sys.argv = [str(ROOT / module / "__main__.py"), *args]
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # noqa: BLE001 - the traceback goes to its log, as a fresh interpreter's would
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # what an interpreter runs on its way out
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run_wave(launches: list[Launch], config: Path, logs: Path, bound: float, first: int = 0,
             spawn: bool = False) -> list[Ended]:
    """Start ``launches`` at their delays (forked, or with ``spawn`` fresh interpreters) and wait for all of
    them; a process over ``bound`` seconds is killed and ends the round as a hang."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "N2P_WAIT_FOR_LOCKS": "1"}
    env.pop("N2P_FAILPOINT", None)
    pending = sorted(enumerate(launches, first), key=lambda p: p[1].delay)
    running: dict[int, tuple[Launch, subprocess.Popen | Forked, float, Path, list[bool]]] = {}
    ended: list[Ended] = []
    t0 = time.monotonic()
    try:
        _wave(pending, running, ended, t0, config, logs, bound, env, spawn)
    finally:  # a hang ends the round: nothing of it keeps running
        for _, proc, *_ in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return ended


def _wave(pending: list, running: dict, ended: list[Ended], t0: float, config: Path, logs: Path, bound: float,
          env: dict, spawn: bool) -> None:
    while pending or running:
        now = time.monotonic()
        while pending and now - t0 >= pending[0][1].delay:
            k, launch = pending.pop(0)
            log = logs / f"p{k:02d}-{launch.stage}.log"
            log.write_text(f"# {launch.label}\n")
            args = ["compare", "--config", str(config.with_name(f"{launch.args[0]}.yaml"))] \
                if launch.stage == "compare" else ["run", "--config", str(config), *launch.args]
            own = {**env, **({"N2P_FAILPOINT": launch.failpoint} if launch.failpoint else {})}
            if spawn:
                with open(log, "a") as fh:
                    proc = subprocess.Popen([sys.executable, "-m", MODULES[launch.stage], *args], cwd=ROOT, env=own,
                                            stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True)
            else:
                proc = Forked(MODULES[launch.stage], args, own, log)
            running[k] = (launch, proc, now, log, [False])
        for k, (launch, proc, start, log, timer) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                if launch.kill_after is not None and now - start >= launch.kill_after and not timer[0]:
                    timer[0] = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                elif now - start > bound:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    ended.append(Ended(launch, proc.returncode, bound, bound, log))
                    del running[k]
                    raise Hang(f"{launch.label} ran over the {bound:.0f}-second bound (hung? its log: {log})")
                continue
            seconds = time.monotonic() - start
            ended.append(Ended(launch, rc, seconds, _log_wait(log, time.time()), log, timer[0], _lingers(proc.pid)))
            del running[k]
        time.sleep(0.05)


def _lingers(group: int, grace: float = 2.0) -> bool:
    """Whether a live process of an ended process's group (one it started and left behind) still runs
    ``grace`` seconds on: zombies do not count (killed with their parent, they wait for init to reap them)."""
    deadline = time.monotonic() + grace
    while _group_alive(group):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def _group_alive(group: int) -> bool:
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: zombies count
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        if int(pgrp) == group and state != "Z":
            return True
    return False


class Hang(Exception):
    """A process of a round ran over the bound."""
