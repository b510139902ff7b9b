"""The validation hold-out: training images set aside to choose settings and ticks.

Settings are chosen on held-out training images, never on test images. The hold-out is
drawn over distinct stimulus names, so every repetition of an image falls on one side, and
it is seeded by the experiment's seed, so every stage and every method sees the same split.
It is chosen before stage 1, which treats it like a test split: no penalty search, fold,
voxel or feature statistic sees it, and its decoded features (split ``validation`` in the
store) come from the same decoders as the test images', from its repetitions averaged as a
test image's are. Stage 2 trains the generator and every method on the rest and predicts the
held-out images exactly as it predicts the test images, so the hold-out ranks methods as the
test set would (up to its fewer averaged repetitions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from shared.data_source import SplitData

VALIDATION = "validation"  # the store split of the held-out images' decoded features
HELD_OUT = "__validation__"  # the split name stage 2's methods see for the held-out images (beside the test sets')


def validation_split(names: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(fit names, validation names)`` of the distinct training images ``names``, each in ``names``' order.

    ``round(fraction * n)`` images are held out (at least one when ``fraction`` > 0 and there are
    at least two images, and never all of them); ``fraction`` 0 holds out none.
    """
    unique = list(dict.fromkeys(names))
    n = len(unique)
    n_val = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    rng = np.random.default_rng([seed, 0x5EED, 16])
    held = set(np.asarray(unique, dtype=object)[rng.permutation(n)[:n_val]].tolist())
    return [u for u in unique if u not in held], [u for u in unique if u in held]


def hold_out(train: SplitData, tests: dict[str, SplitData], train_names: list[str], fraction: float, seed: int
             ) -> tuple[SplitData, dict[str, SplitData]]:
    """Stage 1's data with the hold-out set apart: the trials decoders may fit (``train`` less the held-out
    images' trials) and the splits they predict, ``tests`` and, when ``fraction`` > 0, the held-out images'
    repetitions averaged as a test image's are (split ``validation``, in ``train_names`` order)."""
    from shared.data_source import SplitData, average_by_name
    from shared.errors import UserError

    if fraction <= 0:
        return train, tests
    fit_names, val_names = validation_split(train_names, fraction, seed)
    if not val_names:
        raise UserError(f"{train.path} has {len(train_names)} distinct training image(s): a validation hold-out "
                        f"needs at least 2; set eval.validation_fraction=0")
    held = train.of_images(val_names)
    present = set(held.names)
    val_names = [n for n in val_names if n in present]  # a subject may lack trials of some images
    averaged = SplitData(X=average_by_name(held.X, held.names, val_names), names=np.array(val_names),
                         roi_key=train.roi_key, path=train.path)
    return train.of_images(fit_names), {**tests, VALIDATION: averaged}
