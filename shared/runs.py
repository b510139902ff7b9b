"""Run directories, run metadata and atomic writes of result files.

Every invocation of a stage gets a new directory ``results/<experiment>/runs/<stage>-NNN``
holding the resolved config and metadata (versions, seed, device, git revision, input
hashes), written before the first step. Result files (``metrics.json``, tables, plots)
are written atomically: to a temporary name, then renamed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.config import Config, dump_yaml
from shared.locks import ExperimentLock, pid_alive

log = logging.getLogger(__name__)


TMP_MARK = ".tmp-"  # temporary files are ``.<name>.tmp-<pid>``: renamed into place when complete


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes, fault_point: str = "write") -> None:
    """Write ``data`` to a temporary file, flush it to disk, then rename it over ``path``.

    A write that fails (a full disk) removes the temporary file and leaves the previous
    ``path`` as it was; a full disk is a ``DiskFull`` error naming the file.
    """
    path = Path(path)
    os.replace(write_temporary(path, data, fault_point), path)


def write_temporary(path: Path, data: bytes, fault_point: str = "write") -> Path:
    """``data`` written and flushed to ``path``'s temporary name, which is returned (on a
    failure the temporary file is removed and a full disk raised as ``DiskFull``)."""
    from shared.faults import failpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data[: len(data) // 2])
            failpoint(fault_point)
            failpoint(f"{fault_point}.{path.name}")
            fh.write(data[len(data) // 2:])
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from None
    return tmp


def is_disk_full(exc: OSError) -> bool:
    """A full disk or quota (h5py reports it in its message, without an errno)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc)


def disk_error(exc: OSError, path: Path) -> Exception:
    """A full disk or quota as a one-line ``DiskFull``; any other ``OSError`` unchanged."""
    if not is_disk_full(exc):
        return exc
    from shared.errors import DiskFull

    kept = f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not written"
    return DiskFull(f"no space left on the device while writing {path} ({kept}); free space there "
                    f"(df -h {path.parent}) and rerun, which resumes")


def sweep_temporary_files(*folders: Path, recursive: bool = True) -> int:
    """Delete temporary files and folders (``.<name>.tmp-<pid>[.<suffix>]``) that processes no longer running left
    in ``folders``: a live writer's files (another verb, e.g. ``export``) are kept. Returns how many
    were deleted."""
    n = 0
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for p in sorted((Path(folder).rglob if recursive else Path(folder).glob)(f".*{TMP_MARK}*")):
            pid = p.name.rsplit(TMP_MARK, 1)[-1].split(".")[0]
            if not pid.isdigit() or pid_alive(int(pid)) or not p.exists():
                continue
            if p.is_dir():  # a folder of files written together (saved reconstructions' PNGs)
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    if n:
        log.info("deleted %d temporary file(s) an interrupted run left behind", n)
    return n


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any):
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def update_metrics(path: Path, sections: dict, stage: str | None = None, run_dir: Path | None = None) -> dict:
    """Replace top-level ``sections`` of ``metrics.json`` in one atomic rewrite.

    With ``stage`` and ``run_dir``, also note under ``runs`` which run wrote them.
    """
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(sections)
    if stage is not None:
        data["runs"] = {**data.get("runs", {}), stage: str(Path(run_dir).relative_to(path.parent))}
    atomic_write_json(path, data)
    return data


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        rev = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_hash(path: Path, limit: int = 64 * 1024**2) -> str:
    """SHA-256 of a file's first ``limit`` bytes plus its size (fast on large files)."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:16]


PACKAGES = {"numpy": "numpy", "torch": "torch", "torchvision": "torchvision", "bdpy": "bdpy", "h5py": "h5py",
            "sklearn": "scikit-learn", "scipy": "scipy", "fastl2lir": "fastl2lir", "yaml": "PyYAML",
            "matplotlib": "matplotlib", "PIL": "Pillow"}


def versions() -> dict[str, str]:
    """Python's and every installed dependency's version (from the package metadata)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name, dist in PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # an optional package that is not installed
            pass
    return out


def machine(device: str) -> dict[str, Any]:
    """Where a run ran: host, platform, CPU threads, and the GPU and CUDA/cuDNN when used."""
    import socket

    out: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                           "cpu_count": os.cpu_count(),
                           "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                                              "CUBLAS_WORKSPACE_CONFIG") if k in os.environ}}
    if "torch" in sys.modules:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda"):
            out.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
    return out


class Run:
    """One invocation of a stage: its directory, log file and metadata. Holds the experiment's lock:
    exclusive on its work folder; or (``reads_work``: stage 2, which only reads the feature store and
    writes into folders it locks itself) shared on the work folder and exclusive on its results folder,
    so stage-2 runs of one store with different results folders run at once (``compare --jobs``); or
    (``writes_work``: stage 1, whose processes claim the store's work items one by one) as one of the
    store's writers, which may be many. ``finish`` ends it; a run that fails ends with ``release`` (which
    ``with Run(...)`` calls): its log handler removed and its locks released, its meta.json without "finished"."""

    def __init__(self, cfg: Config, stage: str, device: str, inputs: dict[str, Path] | None = None,
                 reads_work: bool = False, writes_work: bool = False):
        what = f"experiment '{cfg.experiment}'"
        self._handler: logging.Handler | None = None
        self._results_lock = None
        self._lock = ExperimentLock.acquire(cfg.work_path, f"{what} ({cfg.work_path})", shared=reads_work,
                                            writer=writes_work)
        try:
            self._results_lock = ExperimentLock.acquire(cfg.results_path, f"{what} ({cfg.results_path})") \
                if reads_work else None
            # an exclusive lock says no live run is writing them; shared holders and writers leave the store to
            # whoever writes it (a writer sweeps what it claims)
            sweep_temporary_files(*([] if (reads_work or writes_work) else [cfg.work_path]),
                                  *([] if writes_work else [cfg.results_path]))
            base = cfg.results_path / "runs"
            base.mkdir(parents=True, exist_ok=True)
            while True:  # writers of one experiment start at once: the first to make a number has it
                n = 1 + max([int(p.name.rsplit("-", 1)[1]) for p in base.glob(f"{stage}-*")
                             if p.name.rsplit("-", 1)[1].isdigit()], default=0)
                self.dir = base / f"{stage}-{n:03d}"
                try:
                    self.dir.mkdir()
                    break
                except FileExistsError:
                    continue
            self.stage = stage
            self._writes_work, self._folders = writes_work, (cfg.work_path, cfg.results_path)
            atomic_write_text(self.dir / "config.yaml", dump_yaml(cfg))
            meta = {
                "stage": stage,
                "command": " ".join(sys.argv),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seed": cfg.seed,
                "device": device,
                "machine": machine(device),
                "git_revision": git_revision(),
                "versions": versions(),
                "inputs": {k: {"path": str(p), "sha256_16": file_hash(p)} for k, p in (inputs or {}).items()
                           if Path(p).is_file()},
            }
            atomic_write_json(self.dir / "meta.json", meta)
            handler = logging.FileHandler(self.dir / "log.txt")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
            self._handler = handler
            self._t0 = time.time()
            log.info("run directory %s", self.dir)
        except BaseException:  # nothing of a run that could not start is kept held
            self.release()
            raise

    def finish(self, **extra) -> None:
        meta_path = self.dir / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - self._t0, 1)},
                    **extra)
        atomic_write_json(meta_path, meta)
        self.release()
        if self._writes_work:  # what killed writers left in their run folders, once none is running
            sweep_when_alone(*self._folders)

    def release(self) -> None:
        """Remove this run's log handler and release its locks (again: nothing)."""
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        for lock in (self._results_lock, self._lock):
            if lock is not None:
                lock.release()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def sweep_when_alone(work: Path, results: Path) -> None:
    """Delete the temporary files killed processes left in ``results`` (their run folders' too) when no process
    of the experiment is running: its work folder's lock files are both taken exclusively for the sweep (a
    stage-1 writer cannot sweep other writers' run folders while they may be writing, on other hosts too)."""
    import fcntl

    handles = []
    try:
        for name in (".lock", ".lock-writers"):
            handles.append(open(work / name, "a+"))
            try:
                fcntl.flock(handles[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another process holds the experiment (or its file system cannot lock): it sweeps
                return
        sweep_temporary_files(results)
    finally:
        for fh in handles:
            fh.close()
