"""Stage 1's work items and their files.

An item is one layer of one subject and ROI or, with ``decoder.part_units``, one range of a large
layer's units (``part_ranges``: whole chunks of ``decoder.chunk_units``, so a part's chunks are those
one process decoding the whole layer reads). ``LayerFiles`` names what a layer's items write in its
folder of the store: every split's array (for parts, ``<split>.part-<k>of<n>.h5``, stitched into
``<split>.h5``), ``done.json`` (the layer's fingerprint and scores, written last), a part's marker
``part-<k>of<n>.npz`` (the sums its scores merge from), ``choice.json`` (penalties chosen once for all
parts) and the claim files processes lock to take an item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.config import Config
from shared.holdout import VALIDATION
from shared.store import ExperimentStore

OOF = "train_oof"  # the split of out-of-fold decoded training features


def out_splits(cfg: Config) -> list[str]:
    """The decoded splits of every layer: the test sets, the validation hold-out (``validation``, when
    ``eval.validation_fraction`` > 0) and ``train_oof`` when configured."""
    held = [VALIDATION] if cfg.eval.validation_fraction > 0 else []
    return [*cfg.data.test, *held, *([OOF] if cfg.decoder.train_oof else [])]


def part_ranges(n_units: int, part_units: int, chunk_units: int) -> list[slice]:
    """A layer's units in ranges of about ``part_units`` (0: the whole layer in one), each of whole
    chunks of ``chunk_units``, so a part's chunks are the chunks of the whole layer."""
    if part_units <= 0 or part_units >= n_units:
        return [slice(0, n_units)]
    size = -(-part_units // chunk_units) * chunk_units
    return [slice(start, min(start + size, n_units)) for start in range(0, n_units, size)]


@dataclass(frozen=True)
class Item:
    """One work item of stage 1: a layer of one subject and ROI, or part ``part`` of its ``n_parts``."""

    subject: str
    roi: str
    layer: str
    part: int = 0
    n_parts: int = 1
    start: int = 0
    stop: int = 0

    @property
    def units(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def label(self) -> str:
        whole = f"{self.subject} {self.roi} {self.layer}"
        return whole if self.n_parts == 1 else f"{whole} part {self.part + 1}/{self.n_parts} (units {self.start}-{self.stop - 1})"


class LayerFiles:
    """The files of one decoded layer: arrays, parts, markers and claim files."""

    def __init__(self, store: ExperimentStore, subject: str, roi: str, layer: str):
        self.store, self.subject, self.roi, self.layer = store, subject, roi, layer
        self.dir = store.layer_dir(subject, roi, layer)
        self.done = self.dir / "done.json"
        self.choice = self.dir / "choice.json"
        self.layer_claim = self.dir / ".claim-layer"  # the penalty choice and the stitching of parts

    def array(self, split: str) -> Path:
        return self.store.decoded_file(self.subject, self.roi, self.layer, split)

    def part_array(self, split: str, item: Item) -> Path:
        return self.dir / f"{split}.part-{item.part + 1}of{item.n_parts}.h5"

    def part_marker(self, item: Item) -> Path:
        return self.dir / f"part-{item.part + 1}of{item.n_parts}.npz"

    def claim(self, item: Item) -> Path:
        return self.dir / (".claim" if item.n_parts == 1 else f".claim-{item.part + 1}of{item.n_parts}")

    def scores(self, key: str, splits: list[str]) -> dict | None:
        """The layer's scores when it is decoded with fingerprint ``key`` (every split's array present, and
        every part of a stitched one)."""
        if not self.done.is_file():
            return None
        done = json.loads(self.done.read_text())
        n = done.get("parts", 1)
        parts = [self.dir / f"{s}.part-{k + 1}of{n}.h5" for s in splits for k in range(n)] if n > 1 else []
        if done.get("fingerprint") != key or not all(p.is_file() for p in [*map(self.array, splits), *parts]):
            return None
        return done["scores"]

    def part_done(self, item: Item, key: str, splits: list[str]) -> bool:
        """Part ``item`` is decoded with fingerprint ``key``, over the same units."""
        path = self.part_marker(item)
        if not path.is_file() or not all(self.part_array(s, item).is_file() for s in splits):
            return False
        with np.load(path) as marker:
            if "start" not in marker.files:  # an earlier version's marker: its range is unknown
                return False
            return (str(marker["fingerprint"]) == key and int(marker["start"]) == item.start
                    and int(marker["stop"]) == item.stop)

    def item_done(self, item: Item, key: str, splits: list[str]) -> bool:
        return self.scores(key, splits) is not None or (item.n_parts > 1 and self.part_done(item, key, splits))

    def item_outputs(self, item: Item, splits: list[str]) -> list[Path]:
        """The files only ``item`` writes, under its claim (a part's own; a whole layer's arrays and marker)."""
        if item.n_parts == 1:
            return [*(self.array(s) for s in splits), self.done]
        return [*(self.part_array(s, item) for s in splits), self.part_marker(item)]

    def layer_outputs(self, splits: list[str]) -> list[Path]:
        """The files of a layer in parts that are written under the layer's claim (choice, stitched arrays, marker)."""
        return [self.choice, *(self.array(s) for s in splits), self.done]


def work_items(cfg: Config, store: ExperimentStore) -> list[Item]:
    """Every item of the experiment, in the order one process decodes them (subject, ROI, layer, part)."""
    items = []
    for layer in cfg.features.layers:
        with store.open_true(layer, "train") as arr:
            ranges = part_ranges(arr.n_units, cfg.decoder.part_units, cfg.decoder.chunk_units)
        for subject in cfg.data.subjects:
            for roi in cfg.data.rois:
                items += [Item(subject, roi, layer, k, len(ranges), r.start, r.stop) for k, r in enumerate(ranges)]
    order = {(s, r, la): i for i, (s, r, la) in enumerate(
        (s, r, la) for s in cfg.data.subjects for r in cfg.data.rois for la in cfg.features.layers)}
    return sorted(items, key=lambda it: (order[(it.subject, it.roi, it.layer)], it.part))
