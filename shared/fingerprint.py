"""A dataset's fingerprint: what a plan of its run is decided from (``stage1_decode plan``).

Computed through the data layer's reader interface (``shared.datasets.reader``), so every format
gives the same fields: training and test images and trials, repeats per image, the stimuli's side,
grey or colour and value range, voxels per subject and ROI, the median single-trial reliability of
the voxels (``shared.metrics.single_trial_reliability``, from the training trials when images repeat
there, else from the test trials) and the test images that are also training images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shared.data_source import DataSource
from shared.metrics import single_trial_reliability

# stimuli read for the grey / value-range check (all of them up to this many per split)
SAMPLE_IMAGES = 200


@dataclass
class SplitPrint:
    images: int  # distinct stimuli
    trials: int  # rows of the first subject's voxels
    repeats_min: int
    repeats_max: int


@dataclass
class Fingerprint:
    format: str  # 'bdata' or 'matrix'
    subjects: list[str]
    rois: list[str]
    train: SplitPrint
    tests: dict[str, SplitPrint]
    native_size: int | None  # side of the square test stimuli, None when sizes differ
    grey: bool
    value_range: tuple[float, float]  # of the stimuli as read (scaled to [0, 1] by the reader)
    voxels: dict[str, int]  # '<subject> <roi>' -> voxels
    reliability: float | None  # median single-trial reliability of the first subject's first ROI
    reliability_from: str  # 'train' or the test split it came from ('' when no image repeats)
    test_in_train: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The fingerprint as the lines ``plan`` prints."""
        def split(name: str, s: SplitPrint) -> str:
            reps = f"{s.repeats_min}" if s.repeats_min == s.repeats_max else f"{s.repeats_min}-{s.repeats_max}"
            return f"{name}: {s.images} images, {s.trials} trials ({reps} per image)"

        size = f"{self.native_size} x {self.native_size} px" if self.native_size else "sizes differ"
        rel = ("n/a (no image repeats)" if self.reliability is None
               else f"{self.reliability:.3f} (median over voxels, from the {self.reliability_from} repeats)")
        out = [f"format: {self.format}; subjects: {', '.join(self.subjects)}; ROIs: {', '.join(self.rois)}",
               split("training", self.train), *(split(f"test '{k}'", v) for k, v in self.tests.items()),
               f"stimuli: {size}, {'grey' if self.grey else 'colour'}, values {self.value_range[0]:.3g} to "
               f"{self.value_range[1]:.3g} as read",
               "voxels: " + ", ".join(f"{k} {v}" for k, v in self.voxels.items()),
               f"single-trial reliability: {rel}"]
        for k, names in self.test_in_train.items():
            out.append(f"WARNING: {len(names)} of the {self.tests[k].images} '{k}' test images are also training "
                       f"images (equal pixels; first {names[0]}): a retrieval baseline reconstructs them by construction")
        return out


def _split(names: list[str], rows: np.ndarray) -> SplitPrint:
    counts = Counter(rows.tolist())
    per = [counts.get(n, 0) for n in names]
    return SplitPrint(images=len(names), trials=len(rows), repeats_min=min(per, default=0),
                      repeats_max=max(per, default=0))


def _looks(reader, splits: list[str]) -> tuple[bool, tuple[float, float]]:
    """Grey (every channel equal in every read stimulus) and the value range, over up to SAMPLE_IMAGES per split."""
    grey, lo, hi = True, np.inf, -np.inf
    for split in splits:
        names = reader.names(split)[:SAMPLE_IMAGES]
        imgs = reader.stimuli(split, names, 32)
        grey = grey and bool(np.allclose(imgs[:, 0], imgs[:, 1], atol=1e-3) and np.allclose(imgs[:, 0], imgs[:, 2],
                                                                                             atol=1e-3))
        lo, hi = min(lo, float(imgs.min())), max(hi, float(imgs.max()))
    return grey, (lo, hi)


def fingerprint(src: DataSource) -> Fingerprint:
    """The fingerprint of the data ``src`` names (every subject and ROI of ``src.data``)."""
    from shared.datasets import reader

    rd = reader(src)
    subjects, rois, tests = list(src.data.subjects), list(src.data.rois), list(src.data.test)
    first = {split: rd.load(subjects[0], split, rois[0], average=False) for split in ["train", *tests]}
    prints = {split: _split(rd.names(split), first[split].names) for split in first}
    voxels = {f"{s} {r}": (first["train"].X.shape[1] if (s, r) == (subjects[0], rois[0])
                           else rd.load(s, "train", r, average=False).X.shape[1]) for s in subjects for r in rois}
    source = "train" if prints["train"].repeats_max >= 2 else next(
        (t for t in tests if prints[t].repeats_max >= 2), "")
    reliability = None
    if source:
        rel = single_trial_reliability(first[source].X, first[source].names)
        finite = rel[np.isfinite(rel)]
        reliability = float(np.median(finite)) if finite.size else None
    grey, value_range = _looks(rd, ["train", *tests])
    seen = {t: names for t in tests if (names := rd.seen_in_training(t))}
    return Fingerprint(format="matrix" if src.matrix else "bdata", subjects=subjects, rois=rois,
                       train=prints["train"], tests={t: prints[t] for t in tests}, native_size=rd.native_size(),
                       grey=grey, value_range=value_range, voxels=voxels, reliability=reliability,
                       reliability_from=source if reliability is not None else "", test_in_train=seen)
