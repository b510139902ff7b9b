"""How stage-1 processes sharing one feature store split its layers into work items (``SplitLock``): all alike,
or one is refused (``shared.locks``' flocks, released by the kernel when a holder exits or is killed)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from shared.locks import WAIT_FOR_LOCKS, ExperimentLock, _flock, named_holders

log = logging.getLogger(__name__)


class SplitLock:
    """How this stage-1 process splits a store's layers into work items, held for its life: a shared ``flock`` on
    ``<folder>/.split-p<part_units>-c<chunk_units>``, the holder named in ``<that file>.<pid>``. A process whose
    parts would differ (another part size: ``decoder.part_units`` rounded up to whole ``decoder.chunk_units``; 0,
    whole layers, whatever the chunk) while such a holder lives is refused in one line naming the holder and both
    splits (or, with ``N2P_WAIT_FOR_LOCKS=1``, waits for it to end): parts of two splits of one layer overlap and
    would be stitched together. A process that stopped holds nothing, so a rerun may split anew (e.g. with a lower
    ``chunk_units`` after running out of memory). The last holder to release a split's file removes it."""

    def __init__(self, folder: Path, part_units: int, chunk_units: int, what: str):
        import random

        folder.mkdir(parents=True, exist_ok=True)
        self.split = (part_units, chunk_units)
        self.path = folder / f".split-p{part_units}-c{chunk_units}"
        self._named = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        self._fh = None
        waited = False
        try:
            while True:
                other = self._try(folder)
                if other is None:
                    break
                (p, c), holder = other
                if os.environ.get(WAIT_FOR_LOCKS) != "1":
                    from shared.errors import UserError

                    raise UserError(f"{what} are being decoded by {holder} with decoder.part_units={p} and "
                                    f"decoder.chunk_units={c}, this one has decoder.part_units={part_units} and "
                                    f"decoder.chunk_units={chunk_units}; processes sharing a store must split its "
                                    f"layers alike: run this one with that process's values, or after it has ended")
                if not waited:
                    log.info("waiting for %s, decoding %s with decoder.part_units=%d, chunk_units=%d", holder, what,
                             p, c)
                    waited = True
                time.sleep(0.2 + random.random())
        except BaseException:  # interrupted while it held its file for a check
            if self._fh is not None and not self._fh.closed:
                self._let_go()
            raise
        ExperimentLock._forget_gone(folder)  # the name files of killed holders of any split
        self._named.write_text(ExperimentLock._name())

    @staticmethod
    def part_size(part_units: int, chunk_units: int) -> int:
        """The units of each part but a layer's last (0: whole layers), as ``stage1_decode.items.part_ranges``."""
        return 0 if part_units <= 0 else -(-part_units // max(chunk_units, 1)) * max(chunk_units, 1)

    def _hold(self) -> None:
        """Hold this split's file shared (blocking: others hold it exclusively for an instant only), opened anew
        until the file held is the one at its path (its last holder may have removed it meanwhile)."""
        import fcntl

        while True:
            fh = open(self.path, "a+")
            try:
                _flock(fh, fcntl.LOCK_SH)
                if os.path.samestat(os.fstat(fh.fileno()), os.stat(self.path)):
                    self._fh = fh
                    return
            except FileNotFoundError:
                pass
            except BaseException:
                fh.close()
                raise
            fh.close()

    def _try(self, folder: Path) -> tuple[tuple[int, int], str] | None:
        """Hold this process's split and check no live process holds one with other parts; None when granted, else
        that split (part_units, chunk_units) and its holder (nothing is kept)."""
        import fcntl
        import random
        import re

        for _ in range(10):  # another process's check holds a file for an instant: try again
            self._hold()
            busy = None
            for path in sorted(folder.glob(".split-p*-c*")):
                match = re.fullmatch(r"\.split-p(\d+)-c(\d+)", path.name)
                if match is None or self.part_size(int(match[1]), int(match[2])) == self.part_size(*self.split):
                    continue
                try:
                    with open(path) as probe:  # never created here: a file its last holder removed has none
                        if not _flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB):
                            busy = (int(match[1]), int(match[2]))
                            break
                except FileNotFoundError:
                    continue
            if busy is None:
                return None
            self._let_go()  # never hold ours while others check theirs
            time.sleep(0.05 + 0.05 * random.random())
        holders = named_holders(folder / f".split-p{busy[0]}-c{busy[1]}")
        return busy, "; ".join(holders) or "another process"

    def release(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._named.unlink(missing_ok=True)
            self._let_go()

    def _let_go(self) -> None:
        """Drop this split's file; its last holder (the only one an exclusive lock is granted to at once) removes it
        while holding it, so a process that opened it meanwhile finds, once it has its lock, that the file at the
        path is another (``_hold``) and opens that."""
        import fcntl

        if _flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB):
            self.path.unlink(missing_ok=True)
        self._fh.close()

    def __enter__(self) -> "SplitLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
