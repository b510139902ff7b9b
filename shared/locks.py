"""Locks on a shared disk: one folder's holders (``ExperimentLock``: an experiment's work folder, a
results folder, a generator's checkpoints) and one work item's claim (``Claim``), all ``fcntl.flock``,
which the kernel releases when the holder exits or is killed; several folders' locks in one global order
(``acquire_in_order``). How stage-1 processes split a store's layers (``SplitLock``): ``shared/split_lock.py``.

On a cluster the disk must support ``flock`` across nodes (NFSv4, GPFS/Spectrum Scale, Lustre mounted
with ``-o flock``, BeeGFS); ``docs/cluster.md`` says how to check.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (not this process: it has not started writing yet)."""
    if pid == os.getpid():
        return False  # this process has not started writing yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_NAMED = re.compile(r"\.(lock|lock-writers|split-p\d+-c\d+)")  # lock files whose holders name themselves
WAIT_FOR_LOCKS = "N2P_WAIT_FOR_LOCKS"  # set to 1 (compare --jobs does, for its stages): wait, do not refuse


class ExperimentLock:
    """A lock on one folder (an experiment's work folder, a results folder, a generator's checkpoints),
    held for a process's life.

    ``fcntl.flock`` on files in the folder: the kernel releases them when the holder exits or is killed,
    so a crash never leaves a lock stuck. Three kinds of holder:

    * exclusive (the default): alone in the folder;
    * ``shared`` (stage 2 reading a feature store): many at once, never beside an exclusive holder or a
      writer;
    * ``writer`` (stage-1 processes completing one store's work items between them, each item claimed
      under its own lock): many at once, never beside an exclusive holder or a shared one.

    Exclusive and shared holders lock ``<folder>/.lock`` (exclusively or shared), writers lock
    ``<folder>/.lock-writers`` shared; each then checks, by taking the other file exclusively for an
    instant, that no holder of the other kind is there. Files name the holders (pid, host, command,
    start time) for the refusal message of a second process; with ``N2P_WAIT_FOR_LOCKS=1`` in the
    environment a process waits for the lock instead (logged once).
    """

    _held: dict[Path, "ExperimentLock"] = {}  # locks this process holds (a second Run in it reuses one)
    _ordered: set[Path] = set()  # those ``acquire_in_order`` took (stage 2's): a fit there takes no other

    @classmethod
    def acquire(cls, folder: Path, what: str, shared: bool = False, wait: bool = False,
                writer: bool = False, quiet: bool = False) -> "ExperimentLock":
        """The lock of ``folder`` (this process's, if it holds it, in the same mode: another mode is an internal
        error); ``wait``: wait for it whatever the environment says (a generator's or coder's folder: the other
        process finishes what this one needs); ``quiet``: hold it without naming this holder, which writes nothing
        (stage 2 checking its inputs, which must touch nothing); the next acquire that is not quiet names it."""
        path = (folder / ".lock").resolve()
        held = cls._held.get(path)
        if held is not None and not held._fh.closed:
            if held.mode != _mode(shared, writer):  # flocks of two open files of one process conflict: a bug
                raise RuntimeError(f"internal error: this process holds {what} as {held.mode} and asked for it as "
                                   f"{_mode(shared, writer)}")
            if not quiet:
                held.name_holder()
            return held
        lock = cls(folder, what, shared, wait, writer, quiet)
        cls._held[path] = lock
        return lock

    def __init__(self, folder: Path, what: str, shared: bool = False, wait: bool = False, writer: bool = False,
                 quiet: bool = False):
        import fcntl
        import random

        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".lock"
        self.mode = _mode(shared, writer)
        own, other = (".lock-writers", ".lock") if writer else (".lock", ".lock-writers")
        self._named = folder / f"{own}.{os.getpid()}" if (shared or writer) else None  # names this holder
        self._fh = open(folder / own, "a+")
        probe = open(folder / other, "a+")
        mode = fcntl.LOCK_SH if (shared or writer) else fcntl.LOCK_EX
        waited = False
        try:
            while True:
                blocker = self._try(mode, probe)
                if blocker is None:
                    break
                if not wait and os.environ.get(WAIT_FOR_LOCKS) != "1":
                    holder = self._holders(folder / blocker)
                    self._fh.close()
                    from shared.errors import UserError

                    raise UserError(f"{what} is in use by {holder}; wait for that run to finish (or stop it), or "
                                    f"give this run another experiment name")
                if not waited:
                    log.info("waiting for %s (in use by %s)", what, self._holders(folder / blocker))
                    waited = True
                time.sleep(0.2 + random.random())  # both kinds may have stepped back at once: retry apart
        except BaseException:
            self._fh.close()
            raise
        finally:
            probe.close()
        self._unnamed, self._folder = True, folder
        if not quiet:
            self.name_holder()

    def name_holder(self) -> None:
        """Name this holder (pid, host, command, start time) for another process's refusal message, once; and
        delete the name files of holders on this host that are gone (a SIGKILLed one could not delete its own)."""
        if not self._unnamed:
            return
        self._unnamed = False
        self._forget_gone(self._folder)
        if self._named is not None:  # the lock file names the last exclusive holder; the others have their own
            self._named.write_text(self._name())
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(self._name())
        self._fh.flush()

    def _try(self, mode: int, probe) -> str | None:
        """Take this holder's lock and check the other file has no holder; None when granted, else the name
        of the file whose holder is in the way (nothing is kept)."""
        import fcntl

        for attempt in range(10):  # another process's check holds a file for an instant: try again
            if not _flock(self._fh, mode | fcntl.LOCK_NB):
                blocker = self._fh
            elif _flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB):
                fcntl.flock(probe, fcntl.LOCK_UN)
                return None
            else:
                fcntl.flock(self._fh, fcntl.LOCK_UN)  # never hold ours while others check theirs
                blocker = probe
            time.sleep(0.05)
        return Path(blocker.name).name

    @staticmethod
    def _forget_gone(folder: Path) -> None:
        """Delete the name files (``.lock.<pid>``, ``.lock-writers.<pid>``, ``.split-p<P>-c<C>.<pid>``) of shared
        holders, writers and stage-1 splits on this host that are gone: a killed process cannot delete its own (the kernel released its lock)."""
        import socket

        here = f" on {socket.gethostname()} ("
        for f in folder.glob(".*.*"):
            base, _, pid = f.name.rpartition(".")
            if not _NAMED.fullmatch(base) or not pid.isdigit() or pid_alive(int(pid)):
                continue
            try:
                text = f.read_text()
            except OSError:  # deleted meanwhile
                continue
            if not text or here in text:  # (empty: killed between creating it and naming itself)
                f.unlink(missing_ok=True)

    @staticmethod
    def _name() -> str:
        import socket

        command = " ".join([Path(sys.argv[0]).parent.name or sys.argv[0], *sys.argv[1:]])[:160]
        return (f"pid {os.getpid()} on {socket.gethostname()} (`{command}`, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})")

    @staticmethod
    def _holders(path: Path) -> str:
        """Who holds ``path`` now: its live shared holders or writers (``<path>.<pid>`` files); or, when only
        shared holders hold ``.lock`` and none has named itself, a stage-2 run checking its inputs (``quiet``);
        or else the exclusive holder the file names (unless it names a process of this host that has ended)."""
        named = named_holders(path)
        if named:
            return "; ".join(named)
        if path.name == ".lock" and _held_shared_only(path):
            return "a stage-2 run checking its inputs (it names itself once they pass)"
        holder = ""
        for _ in range(20):  # the holder may be between emptying the file and naming itself
            try:
                holder = path.read_text().strip()
            except OSError:
                holder = ""
            if holder:
                break
            time.sleep(0.05)
        import re
        import socket

        earlier = re.match(r"pid (\d+) on (\S+) ", holder)
        if earlier and earlier[2] == socket.gethostname() and not pid_alive(int(earlier[1])):
            holder = ""  # a holder that has ended
        return holder or "another process"

    def release(self) -> None:
        if not self._fh.closed:
            if self._named is not None:
                self._named.unlink(missing_ok=True)
            self._fh.close()  # closing drops the flock
        ExperimentLock._held.pop(self.path.resolve(), None)
        ExperimentLock._ordered.discard(self.path.resolve())

    def __enter__(self) -> "ExperimentLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _mode(shared: bool, writer: bool) -> str:
    return "writer" if writer else "shared" if shared else "exclusive"


def named_holders(path: Path) -> list[str]:
    """The names of ``path``'s live holders that named themselves in ``<path>.<pid>`` files."""
    named = []
    for f in sorted(path.parent.glob(f"{path.name}.*")):
        pid = f.name.rsplit(".", 1)[-1]
        if pid.isdigit() and pid_alive(int(pid)):
            try:
                named.append(f.read_text().strip() or "another process")
            except OSError:  # released meanwhile
                pass
    return named


def _held_shared_only(path: Path) -> bool:
    """Whether ``path`` is held now, and only shared (an instant's non-blocking look, nothing kept)."""
    import fcntl

    try:
        with open(path) as probe:
            if _flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB):
                return False  # no holder (any more)
            return _flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False


def _flock(fh, mode: int) -> bool:
    """``flock``; False when another process holds the lock (``LOCK_NB``). A file system that cannot lock
    (Lustre without ``-o flock``, NFS mounted ``nolock``) is a one-line ``UserError``, never taken for a
    busy lock."""
    import fcntl

    try:
        fcntl.flock(fh, mode)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        from shared.errors import UserError

        raise UserError(f"cannot lock {fh.name} ({exc.strerror}): its file system does not support flock; put "
                        f"work_dir and results_dir on a disk that does (docs/cluster.md says how to check)") from None


class Claim:
    """An exclusive ``flock`` on one file, for one work item (a layer, or a range of its units) that
    processes sharing a store complete between them; released on ``release`` or when the process dies."""

    def __init__(self, path: Path, wait: bool = False):
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a+")
        try:
            granted = _flock(self._fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BaseException:
            self._fh.close()
            raise
        if not granted:
            self._fh.close()
            raise BlockingIOError(f"{path} is claimed by another process")

    @classmethod
    def take(cls, path: Path) -> "Claim | None":
        """The claim of ``path``, or None while another process holds it."""
        try:
            return cls(path)
        except BlockingIOError:
            return None

    def release(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_in_order(folders: dict[Path, str]) -> list[ExperimentLock]:
    """The exclusive locks of ``folders`` (each folder -> what it is, for the log), waited for and taken in one
    global order, their resolved paths sorted, whatever order the caller lists them in: two processes that need
    some of the same folders (``compare --jobs`` variants listing subjects, ROIs or methods in other orders) then
    never each hold one the other waits for. Held until released (or the process ends); when one cannot be taken,
    those this call took are released (not those the process held before). A fit asks for them by
    ``held_for_fit``."""
    resolved = {Path(folder).resolve(): what for folder, what in folders.items()}
    taken: list[ExperimentLock] = []
    created: list[ExperimentLock] = []
    try:
        for folder, what in sorted(resolved.items(), key=lambda fw: str(fw[0])):
            before = ExperimentLock._held.get((folder / ".lock").resolve())
            taken.append(ExperimentLock.acquire(folder, what, wait=True))
            if taken[-1] is not before:
                created.append(taken[-1])
    except BaseException:
        for lock in reversed(created):
            lock.release()
        raise
    ExperimentLock._ordered.update(lock.path.resolve() for lock in taken)
    return taken


def held_for_fit(folder: Path, what: str) -> ExperimentLock:
    """The lock of a folder a method trains in (one writer at a time, until the run ends). Under stage 2, which took
    every such folder up front in one order (``acquire_in_order`` of ``Method.lock_folders``), it must be one of
    those: any other is an internal error, never a lock taken out of order. Elsewhere it is waited for."""
    path = (Path(folder) / ".lock").resolve()
    if not ExperimentLock._ordered:
        return ExperimentLock.acquire(Path(folder), what, wait=True)
    held = ExperimentLock._held.get(path)
    if path not in ExperimentLock._ordered or held is None or held._fh.closed:
        raise RuntimeError(f"internal error: {what} is not among the folders this run locked up front in one order "
                           f"(its methods' lock_folders; asked for {folder}); taking it now could deadlock")
    return held
