"""Checkpoint files that detect their own corruption, written atomically, one generation kept.

A file is ``MAGIC``, the SHA-256 of the payload (32 bytes) and the payload (``torch.save``
bytes). Reading checks the digest, so a truncated or damaged file is a
``CorruptCheckpoint``, never a silently wrong state. ``save`` renames the current file
to ``<name>.prev`` before putting the new one in place, and ``load_latest`` falls back
to it, with a warning, when the current one is damaged or missing.

Files are read with ``torch.load(weights_only=True)``: tensors and plain data (numbers, strings,
lists, tuples, dicts) only. A file that needs general unpickling (which can run any code on load,
e.g. a checkpoint someone shared or a paper's download) is refused in one line naming it
(``UnsafeCheckpoint``), never loaded, and not passed over for an older generation.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from shared.errors import UserError

log = logging.getLogger(__name__)

MAGIC = b"N2PCKPT1"


class CorruptCheckpoint(UserError):
    """A checkpoint file that cannot be read back as written."""


class UnsafeCheckpoint(UserError):
    """A checkpoint file holding objects that only general unpickling could rebuild."""


def needs_unpickling(exc: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a class or function (torch's wording over releases)."""
    return any(w in str(exc).lower() for w in ("unsupported global", "unsupported class"))


def _torch_load(blob: bytes, path: Path, map_location) -> Any:
    import pickle

    import torch

    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if needs_unpickling(exc):  # a class or function to import and call: refused
            raise UnsafeCheckpoint(f"{path} holds objects beyond tensors and plain data, which loading would have "
                                   f"to unpickle (that can run any code); this tool does not load it: delete it, or "
                                   f"re-save only its state dicts") from None
        raise CorruptCheckpoint(f"checkpoint {path} cannot be read (UnpicklingError); delete it to start that "
                                f"training afresh") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable content is damage
        raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start that "
                                f"training afresh") from None


def previous(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def save(obj: Any, path: Path, keep_previous: bool = True, fault_point: str = "checkpoint.write") -> None:
    """Write ``obj`` to ``path`` atomically (a kill leaves the old file or the new one); ``fault_point``
    names the write for the tests' failpoints."""
    import torch

    from shared.runs import write_temporary

    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    data = MAGIC + hashlib.sha256(payload).digest() + payload
    path = Path(path)
    tmp = write_temporary(path, data, fault_point=fault_point)  # a full disk leaves both files as they were
    if keep_previous and path.is_file() and intact(path):  # a damaged file never displaces a good .prev
        os.replace(path, previous(path))  # a kill here leaves only .prev, which load_latest reads
    os.replace(tmp, path)


HEAD = len(MAGIC) + 32


def _digest_ok(data: bytes) -> bool:
    return len(data) >= HEAD and hashlib.sha256(data[HEAD:]).digest() == data[len(MAGIC):HEAD]


def intact(path: Path) -> bool:
    """Whether ``path`` holds a checkpoint whose checksum matches (a plain torch file counts as intact)."""
    data = Path(path).read_bytes()
    return data[: len(MAGIC)] != MAGIC or _digest_ok(data)


def load(path: Path, map_location=None) -> Any:
    """The object saved at ``path``; a damaged file raises ``CorruptCheckpoint``."""
    path = Path(path)
    data = path.read_bytes()
    if data[: len(MAGIC)] == MAGIC:
        if not _digest_ok(data):
            raise CorruptCheckpoint(f"checkpoint {path} is damaged (its checksum does not match: truncated or "
                                    f"overwritten); delete it to start that training afresh")
        return _torch_load(data[HEAD:], path, map_location)
    return _torch_load(data, path, map_location)  # a plain torch.save file (written before checksums)


def load_latest(path: Path, map_location=None) -> tuple[Any, Path] | tuple[None, None]:
    """The newest readable generation of ``path``: ``(object, file)``, or ``(None, None)`` if none.

    A damaged current file is passed over with a warning for its previous generation.
    """
    path = Path(path)
    errors = []
    for candidate in (path, previous(path)):
        if not candidate.is_file():
            continue
        try:
            obj = load(candidate, map_location)
        except FileNotFoundError:  # renamed to .prev by a writer meanwhile
            continue
        except CorruptCheckpoint as exc:
            errors.append(str(exc))
            log.warning("%s; trying the one before it", exc)
            continue
        if errors:
            log.warning("resuming from the last good checkpoint, %s", candidate)
        return obj, candidate
    if errors:
        log.warning("no readable checkpoint in %s: training starts afresh", path.parent)
    return None, None
