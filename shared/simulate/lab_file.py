"""A small lab's ``.mat`` file in a layout unlike the presets': what ``plan`` is tried on as a new lab would.

40 grey 20 x 20 training images once each and 8 test images twice, the arrays called ``brain_fit`` /
``brain_eval`` (trials x 120 voxels, linear in the pixels plus noise) and ``stims_fit`` / ``stims_eval``
(uint8 image stacks with the trials on the last axis, ``(H, W, trials)``); no split is called "test".
``tests/test_plan.py`` and ``bench/bench_plan.py`` write it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_lab_file(path: Path, test_from_train: bool = False, seed: int = 0) -> None:
    """Write the file to ``path``; ``test_from_train``: the test images are the first training images."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    side, n_fit, n_eval = 20, 40, 8
    yy, xx = np.mgrid[:side, :side]

    def images(n):
        c = rng.uniform(4, 16, (n, 2, 1, 1))
        return np.exp(-((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2) / 12.0)

    fit = images(n_fit)
    ev = fit[:n_eval] if test_from_train else images(n_eval)
    ev = np.concatenate([ev, ev])  # each test image twice
    w = rng.standard_normal((side * side, 120))
    savemat(path, {"brain_fit": fit.reshape(n_fit, -1) @ w + 0.5 * rng.standard_normal((n_fit, 120)),
                   "brain_eval": ev.reshape(len(ev), -1) @ w + 0.5 * rng.standard_normal((len(ev), 120)),
                   "stims_fit": np.moveaxis((fit * 255).astype(np.uint8), 0, -1),
                   "stims_eval": np.moveaxis((ev * 255).astype(np.uint8), 0, -1)})
