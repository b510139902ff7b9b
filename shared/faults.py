"""Fault injection for the reliability tests: named points where a process can be made to fail.

Set ``N2P_FAILPOINT=<point>[:<n>[:<action>]]`` and the ``n``-th time (default 1) the
process reaches ``failpoint(<point>)`` it fails: ``kill`` (the default) sends itself
SIGKILL, as a preempted or OOM-killed job would be (nothing is cleaned up); ``enospc``
raises the ``OSError`` a full disk gives. Unset, a failpoint costs one dictionary look-up.

Points: ``features.batch`` (stage 1, after each image batch), ``decode.chunk`` (stage 1,
after each chunk of a layer's units), ``train.step`` (stage 2, after each generator step),
``checkpoint.write`` (halfway through writing a checkpoint), ``write`` and ``write.<file name>``
(halfway through an atomic write of a result file), ``compare.variant`` (after each finished variant).
"""

from __future__ import annotations

import errno
import os
import signal

_hits: dict[str, int] = {}


def failpoint(point: str) -> None:
    spec = os.environ.get("N2P_FAILPOINT")
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    count, _, action = rest.partition(":")
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] != int(count or 1):
        return
    if (action or "kill") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    else:
        raise ValueError(f"N2P_FAILPOINT action must be kill or enospc, not {action!r}")
