"""Parents that wait on a child process: a child that dies is noticed at once and told in one line.

- ``exit_text(status)``: how a child ended, from its exit status (negative: the signal that killed it);
- ``missing_module(status, text)``: the module a child could not import, when that is what ended it;
- ``install_command(module)``: the command that installs it (the project's requirements or one of its extras);
- ``run_in_child(ctx, target, args, name)``: ``target(*args)`` in a child process of the multiprocessing
  context ``ctx``, its return value handed back; a child that dies without one (killed, crashed, or failed
  on an import) ends the wait at once with a ``UserError`` naming the child, its exit status and, for a
  missing package, the install command. The benchmarks run each measurement this way.

Nothing heavy is imported here: a child imports this module before its target's.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable

from shared.errors import UserError

# the project's packages and the import names of setup.cfg's install_requires: `pip install -e .` (make setup)
_REQUIRED = {"shared", "stage1_decode", "stage2_generate", "torch", "torchvision", "bdpy", "sklearn", "scipy",
             "numpy", "h5py", "fastl2lir", "yaml", "matplotlib", "tqdm", "PIL"}
# import names of setup.cfg's extras_require -> the extra that installs them
_EXTRAS = {"himalaya": "bench", "submitit": "cluster", "pytest": "test", "xdist": "test", "skimage": "test"}
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "skimage": "scikit-image", "yaml": "pyyaml", "PIL": "pillow"}
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")
_TRACEBACK = "Traceback (most recent call last):"


def exit_text(status: int | None) -> str:
    """``'exited with status 1'``, or ``'was killed by signal 9 (SIGKILL)'`` for a negative status."""
    if status is None:
        return "is still running"
    if status >= 0:
        return f"exited with status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        return f"was killed by signal {-status}"
    hint = ", sent by hand or by the kernel's out-of-memory killer" if name == "SIGKILL" else ""
    return f"was killed by signal {-status} ({name}{hint})"


def missing_module(status: int | None, text: str) -> str | None:
    """The module a child could not import when that is what ended it: it exited with status 1 and ``text`` (the
    end of its output) ends with a traceback whose last line is the ``ModuleNotFoundError``. None otherwise: a
    child killed by a signal, or one that handled the import (the error's text elsewhere in its output)."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    if status != 1 or not lines or not any(ln.startswith(_TRACEBACK) for ln in lines):
        return None
    found = _MISSING.fullmatch(lines[-1])
    return found[1] if found else None


def install_command(module: str) -> str:
    """The command that installs the package of ``module`` (an import name such as ``sklearn.linear_model``)."""
    top = module.split(".")[0]
    if top in _REQUIRED:
        return "pip install -e . in the repository (the project and its requirements, as make setup installs them)"
    if top in _EXTRAS:
        return f"pip install -e '.[{_EXTRAS[top]}]' in the repository"
    return f"pip install {_DISTRIBUTIONS.get(top, top)}"


def missing_line(module: str) -> str:
    """``no module named 'x'; install it with <command>``: what a child that failed on an import is told by."""
    return f"no module named {module!r}; install it with {install_command(module)}"


def _child_main(conn, module: str, qualname: str, args: tuple) -> None:
    """In the child: import ``module``, call its ``qualname`` on ``args`` and send ``('ok', value)``; a failed
    import sends ``('missing', module)`` and exits 1, a ``UserError`` ``('user', text)`` and exits 2, any other
    exception ``('error', text)`` after its traceback and exits 1."""
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        value = target(*args)
    except ModuleNotFoundError as exc:
        conn.send(("missing", exc.name or str(exc)))
        sys.exit(1)
    except UserError as exc:  # already one line
        conn.send(("user", str(exc)))
        sys.exit(2)
    except BaseException as exc:  # noqa: BLE001 - a bug: its traceback, then one line in the parent
        traceback.print_exc()
        sys.stderr.flush()
        conn.send(("error", f"{type(exc).__name__}: {exc}".strip()))
        sys.exit(1)
    conn.send(("ok", value))


def run_in_child(ctx, target: Callable, args: tuple, name: str) -> Any:
    """``target(*args)`` in a fresh process of ``ctx`` (e.g. ``multiprocessing.get_context('spawn')``); its
    return value. The wait ends as soon as the child sends its value or dies: a child that dies without one
    raises a one-line ``UserError`` naming it (``name``), its pid and exit status, and for a failed import
    the install command. Ctrl-C in the parent terminates the child."""
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(writer, target.__module__, target.__qualname__, args), name=name)
    proc.start()
    writer.close()  # the child holds the only writing end: its death ends the pipe
    try:
        wait([reader, proc.sentinel])
        try:
            message = reader.recv() if reader.poll() else None
        except (EOFError, OSError):  # died without a word, or halfway through one
            message = None
        proc.join()
    except BaseException:
        proc.terminate()
        proc.join()
        raise
    finally:
        reader.close()
    kind, value = message if message else ("died", None)
    if kind == "ok":
        return value
    who = f"{name} (pid {proc.pid}) {exit_text(proc.exitcode)}"
    if kind == "missing":
        raise UserError(f"{who}: {missing_line(value)}")
    if kind == "user":
        raise UserError(f"{who}: {value}")
    if kind == "error":
        raise UserError(f"{who}: {value} (its traceback is above)")
    raise UserError(f"{who} before it sent its result")
