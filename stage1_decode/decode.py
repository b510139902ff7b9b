"""Fit decoders from voxels to a layer, predict test and out-of-fold features, score them.

The validation hold-out is set apart first (``shared.holdout.hold_out``): decoders never fit on it, and it is
predicted like a test set (split ``validation``) from its averaged repetitions. For one (subject, ROI)
(``RoiWork``): voxels are z-scored with training-trial statistics and the decoder (``stage1_decode.decoders``: dense
ridge with a penalty per layer or per unit, or voxel-selected sparse ridge) is prepared once. For each layer the
penalty is chosen by image-grouped cross-validation, then the layer is streamed through in chunks of units: true
training features (z-scored with training statistics) -> decoder -> decoded test features and out-of-fold decoded
training features (split ``train_oof``: each training image predicted by a decoder fit without it) -> store. Scores
accumulate chunk by chunk, so no step holds a whole layer.

Work items (``Item``) are (subject, ROI, layer) or, with ``decoder.part_units``, ranges of a large layer's units.
Processes sharing a store claim items under a lock file each (``shared.locks.Claim``); a finished layer leaves
``done.json`` (its scores), a finished part ``part-<k>of<n>.npz`` (the sums its scores merge from), and whoever
finishes a layer's last part stitches the parts into the one array readers see (``shared.store.write_stitched``).
Parts begin at multiples of ``decoder.chunk_units``, so every chunk, and every decoded value, is what one process
decoding the whole layer computes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.config import Config
from shared.datasets import SplitData
from shared.errors import UserError
from shared.evaluation import DecodingScores
from shared.faults import failpoint
from shared.holdout import VALIDATION, hold_out
from shared.layers import is_pixels
from shared.metrics import single_trial_reliability
from shared.locks import Claim
from shared.runs import atomic_write_bytes, atomic_write_json
from shared.ridge import ALPHA_MAX, ALPHA_MIN, MAX_EXTENSIONS, ImageFolds, Standardiser
from shared.store import ExperimentStore, FeatureArray, write_stitched
from shared.weights import parse_weights
from stage1_decode.items import OOF, Item, LayerFiles, out_splits, work_items

log = logging.getLogger(__name__)


@dataclass
class LayerStats:
    """Training statistics of a layer (over trials), per unit, float32."""

    mean: np.ndarray
    std: np.ndarray


def layer_stats(true_train: FeatureArray, counts: np.ndarray, chunk: int, sample: np.ndarray,
                units: slice | None = None) -> tuple[LayerStats, np.ndarray]:
    """Mean and SD of each unit of ``units`` (default: all) over training trials (images weighted by
    repetitions), and the columns ``sample`` (sorted unit indices within ``units``) of the layer, gathered
    in the same pass."""
    w = (counts / counts.sum())[:, None]
    means, stds, picked = [], [], []
    for block_units, block in true_train.iter_units(chunk, units):
        m = (w * block).sum(axis=0)
        v = (w * (block - m) ** 2).sum(axis=0)
        means.append(m)
        stds.append(np.sqrt(v))
        inside = sample[(sample >= block_units.start) & (sample < block_units.stop)]
        picked.append(block[:, inside - block_units.start])
    std = np.concatenate(stds).astype(np.float32)
    stats = LayerStats(np.concatenate(means).astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32))
    return stats, np.concatenate(picked, axis=1)


def fingerprint(cfg: Config, store: ExperimentStore, subject: str, roi: str, train_path: Path,
                test_paths: dict[str, Path]) -> str:
    """What decoded features depend on: features, decoder settings, ROI and the input files.

    A ``done.json`` (or part marker) with another fingerprint is stale and its layer is decoded again.
    """
    from dataclasses import asdict

    import sklearn

    def stamp(path):
        st = path.stat()
        return [str(path), st.st_size, int(st.st_mtime)]

    decoder = asdict(cfg.decoder)
    decoder.pop("chunk_units")  # changes memory use, not results
    decoder.pop("part_units")  # changes how the work is split, not results
    if cfg.decoder.kind == "ridge":  # settings the dense decoder ignores
        decoder.pop("n_voxels")
        decoder.pop("backend")
    true_files = [store.true_file(layer, split) for layer in cfg.features.layers for split in ["train", *test_paths]]
    blob = {"features": store.true_expect("*", "*"), "decoder": decoder, "seed": cfg.seed,
            "validation_fraction": cfg.eval.validation_fraction,  # which training images are held out
            "roi": roi, "subject": subject, "train": stamp(train_path),
            "tests": {k: stamp(p) for k, p in test_paths.items()},
            "true_files": [stamp(p) for p in true_files if p.is_file()],  # features replaced, e.g. by import-lab
            "folds": sklearn.__version__}  # GroupKFold's assignment may change between releases
    if any(map(is_pixels, cfg.features.layers)):  # pixels layers search past the penalty grid's ends
        blob["extended_grid"] = [MAX_EXTENSIONS, ALPHA_MIN, ALPHA_MAX]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def data_report(train: SplitData) -> dict:
    """What the training data of one subject and ROI hold: voxels, constant voxels, trials, images and
    the median single-trial reliability (None when no image was repeated)."""
    reliability = single_trial_reliability(train.X, train.names)
    finite = reliability[np.isfinite(reliability)]
    return {"n_voxels": int(train.X.shape[1]), "n_constant_voxels": int((train.X.std(axis=0) <= 1e-8).sum()),
            "n_train_trials": int(train.X.shape[0]), "n_train_images": int(len(set(train.names))),
            "reliability_median": float(np.median(finite)) if finite.size else None}


class RoiWork:
    """One subject and ROI being decoded: its data, fingerprint and decoder, built once for its layers."""

    def __init__(self, cfg: Config, store: ExperimentStore, subject: str, roi: str, train: SplitData,
                 tests: dict[str, SplitData], device, train_names: list[str]):
        """``train``: the trials decoders fit on (the validation hold-out's are not among them);
        ``tests``: averaged data of every test set and of the hold-out (``validation``), all predicted
        by the same decoders; ``train_names``: every training image, in the store's row order."""
        from stage1_decode.decoders import make_decoder  # imports torch

        dc = cfg.decoder
        self.cfg, self.store, self.subject, self.roi, self.tests = cfg, store, subject, roi, tests
        self.train_names = train_names
        self.n_voxels = int(train.X.shape[1])
        self.train_path, self.roi_key = train.path, train.roi_key
        self.key = fingerprint(cfg, store, subject, roi, train.path,
                               {k: d.path for k, d in tests.items() if k != VALIDATION})
        self.splits = out_splits(cfg)
        self.report = data_report(train)
        x_std = Standardiser().fit(train.X)
        img_index = {n: i for i, n in enumerate(train_names)}
        trial_img = np.array([img_index[n] for n in train.names])
        cross = len(dc.alphas) > 1 or dc.train_oof
        self.folds = ImageFolds(trial_img, len(train_names), dc.cv_folds if cross else 1, cfg.seed)
        if len(self.folds) < 2 and cross:
            raise UserError(f"{train.path} has trials of {len(self.folds.present)} training image(s) for {subject} "
                            f"{roi}; cross-validation needs at least 2 (set decoder.alphas to one value and "
                            f"decoder.train_oof=false)")
        self.decoder = make_decoder(dc.kind, dc.alpha_per, dc.backend, dc.n_voxels, dc.alphas, x_std.transform(train.X),
                                    {split: x_std.transform(d.X) for split, d in tests.items()}, self.folds, device)
        self.oof_names = [train_names[i] for i in self.folds.present] if dc.train_oof else None
        if dc.kind == "sparse" and dc.n_voxels >= train.X.shape[1]:
            log.warning("%s %s has %d voxels, not more than decoder.n_voxels=%d: the sparse decoder selects nothing "
                        "and is dense ridge with a bias, much slower than decoder.kind=ridge", subject, roi,
                        train.X.shape[1], dc.n_voxels)

    def files(self, layer: str) -> LayerFiles:
        return LayerFiles(self.store, self.subject, self.roi, layer)

    def decode(self, item: Item, layer_items: list[Item]) -> None:
        """Decode one item (a whole layer, or a part of one: ``layer_items`` are all its layer's parts) and
        write its files; the last part of a layer to finish stitches the layer. The caller holds the item's
        claim."""
        dc = self.cfg.decoder
        files = self.files(item.layer)
        with Claim(files.layer_claim, wait=True):
            _sweep(files.layer_outputs(self.splits))  # a killed stitcher's (the claim says no one writes them)
            if files.done.is_file() and json.loads(files.done.read_text()).get("fingerprint") != self.key:
                files.done.unlink()  # another config's layer: not done whatever its arrays become
        if not dc.train_oof:  # out-of-fold features of an earlier run with other settings are stale
            files.array(OOF).unlink(missing_ok=True)
        if VALIDATION not in self.splits:  # so is a hold-out an earlier run decoded: no stage 2 may read it
            files.array(VALIDATION).unlink(missing_ok=True)
        layer_index = self.cfg.features.layers.index(item.layer)
        with self.store.open_true(item.layer, "train", names=self.train_names) as true_train:
            if item.n_parts == 1:
                for stale in [*files.dir.glob("*.part-*of*.h5"), *files.dir.glob("part-*of*.npz"), files.choice]:
                    stale.unlink(missing_ok=True)  # parts of an earlier split of this layer
                stats, Y_sample, sample = self._stats_and_sample(true_train, layer_index)
                choice = self._choose(item.layer, stats, Y_sample, sample)
                acc = self._decode_units(item, true_train, stats, choice, {s: files.array(s) for s in self.splits})
                atomic_write_json(files.done, {"fingerprint": self.key,  # written last
                                               "scores": self._layer_scores(choice, acc, true_train.n_units)})
                log.info("%s: decoded", item.label)
                return
            with Claim(files.layer_claim, wait=True):
                choice = self._layer_choice(item.layer, true_train, files)
            stats, _ = layer_stats(true_train, self.folds.counts, dc.chunk_units, np.zeros(0, int), item.units)
            acc = self._decode_units(item, true_train, stats, choice,
                                     {s: files.part_array(s, item) for s in self.splits})
        buf = io.BytesIO()
        np.savez(buf, fingerprint=np.array(self.key), start=np.array(item.start), stop=np.array(item.stop),
                 **acc.state())
        atomic_write_bytes(files.part_marker(item), buf.getvalue())  # written last
        log.info("%s: decoded", item.label)
        self.stitch(layer_items)

    def stitch(self, parts: list[Item]) -> bool:
        """When every part of a layer is decoded: its arrays as one virtual array per split over the part
        files, and ``done.json`` with the scores merged from the parts, under the layer's claim (one process
        stitches). True when the layer is (now) done."""
        files = self.files(parts[0].layer)
        with Claim(files.layer_claim, wait=True):
            if files.scores(self.key, self.splits) is not None:
                return True
            if not all(files.part_done(p, self.key, self.splits) for p in parts):
                return False
            _sweep(files.layer_outputs(self.splits))
            with self.store.open_true(parts[0].layer, "train", names=self.train_names) as true_train:
                n_units = true_train.n_units
                choice = self._layer_choice(parts[0].layer, true_train, files)
            for split in self.splits:
                write_stitched(files.array(split), [(files.part_array(split, p), p.units) for p in parts])
            acc = Accumulated.merge([dict(np.load(files.part_marker(p))) for p in parts], self.splits)
            atomic_write_json(files.done, {"fingerprint": self.key, "parts": len(parts),
                                           "scores": self._layer_scores(choice, acc, n_units)})
        log.info("%s %s %s: %d parts stitched into one array per split", self.subject, self.roi, parts[0].layer,
                 len(parts))
        return True

    # ------------------------------------------------------------------ the steps

    def _stats_and_sample(self, true_train: FeatureArray, layer_index: int):
        dc = self.cfg.decoder
        rng = np.random.default_rng([self.cfg.seed, layer_index])  # the same units however the run resumed
        sample = np.sort(rng.choice(true_train.n_units, min(dc.cv_units, true_train.n_units), replace=False))
        stats, Y_sample = layer_stats(true_train, self.folds.counts, dc.chunk_units, sample)
        return stats, Y_sample, sample

    def _choose(self, layer: str, stats: LayerStats, Y_sample: np.ndarray, sample: np.ndarray):
        from stage1_decode.decoders import weak_decoding  # (decoders imports torch)
        extend = is_pixels(layer)  # pixel ridge's decoder: its grid grows, as it did
        choice = self.decoder.choose((Y_sample - stats.mean[sample]) / stats.std[sample], self.cfg.decoder.train_oof,
                                     extend=extend)
        log.info("%s %s %s: %s", self.subject, self.roi, layer, "penalties chosen per unit while decoding"
                 if choice.alpha is None else f"alpha {choice.alpha:g} (cv profile r {choice.report})")
        if warning := weak_decoding(choice, self.cfg.decoder.alphas, extend):
            log.warning("%s %s %s: %s", self.subject, self.roi, layer, warning)
        return choice

    def _layer_choice(self, layer: str, true_train: FeatureArray, files: LayerFiles):
        """The penalties of every part of a layer: nothing to choose, or chosen once from the layer's sample of
        units (as one process decoding the whole layer would) and kept in ``choice.json`` for the other parts.
        The caller holds the layer's claim."""
        from stage1_decode.decoders import Choice

        dc = self.cfg.decoder
        if len(dc.alphas) == 1 or (dc.kind == "ridge" and dc.alpha_per == "unit"):
            return self.decoder.choose(None, dc.train_oof)  # nothing to choose from the sample
        if files.choice.is_file():
            kept = json.loads(files.choice.read_text())
            if kept.get("fingerprint") == self.key:
                return Choice(kept["alpha"], kept["fold_alphas"], kept["report"])
        stats, Y_sample, sample = self._stats_and_sample(true_train, self.cfg.features.layers.index(layer))
        choice = self._choose(layer, stats, Y_sample, sample)
        atomic_write_json(files.choice, {"fingerprint": self.key, "alpha": choice.alpha,
                                         "fold_alphas": choice.fold_alphas, "report": choice.report})
        return choice

    def _decode_units(self, item: Item, true_train: FeatureArray, stats: LayerStats, choice,
                      paths: dict[str, Path]) -> "Accumulated":
        """Stream ``item``'s units through the decoder into the arrays ``paths`` (one per split, holding those
        units); return the accumulated scores and penalty counts."""
        from contextlib import ExitStack

        from tqdm import tqdm

        dc = self.cfg.decoder
        spec = parse_weights(self.cfg.features.weights)
        splits = {split: list(d.names) for split, d in self.tests.items()}
        if self.oof_names is not None:
            splits[OOF] = self.oof_names
        attrs = {"alpha_per": dc.alpha_per, "n_voxels": self.n_voxels,
                 "provenance": {"bdata": str(self.train_path), "roi_key": self.roi_key},
                 **({} if choice.alpha is None else {"alpha": choice.alpha})}
        acc = Accumulated({split: DecodingScores(len(names)) for split, names in splits.items()})
        start, n = item.start, item.stop - item.start
        with ExitStack() as stack:
            trues, writers = {}, {}
            for split, names in splits.items():
                if split != OOF:  # the validation hold-out's true features are rows of the training images'
                    trues[split] = stack.enter_context(
                        self.store.open_true(item.layer, "train" if split == VALIDATION else split))
                writers[split] = stack.enter_context(self.store.writer(
                    paths[split], names, n,
                    {**self.store.decoded_expect(self.subject, self.roi, item.layer, split),
                     "unit_shape": list(true_train.unit_shape), "weights_label": spec.label, **attrs}))
            rows = {split: trues[split].rows_for(splits[split]) for split in trues}
            n_chunks = -(-n // dc.chunk_units)
            for units, block in tqdm(true_train.iter_units(dc.chunk_units, item.units), total=n_chunks,
                                     desc=f"decode {self.subject}/{self.roi}/{item.layer}", unit="chunk", leave=False):
                mean, std = stats.mean[units.start - start:units.stop - start], stats.std[units.start - start:units.stop - start]
                result = self.decoder.decode((block - mean) / std, choice, self.oof_names is not None)
                acc.add_penalties(result)
                failpoint("decode.chunk")
                decoded = dict(result.tests)
                if self.oof_names is not None:
                    decoded[OOF] = result.oof
                for split, pred_z in decoded.items():
                    pred = pred_z * std + mean
                    writers[split].write_units(slice(units.start - start, units.stop - start), pred)
                    true = block[self.folds.present] if split == OOF else trues[split].read(rows[split], units)
                    acc.scores[split].add(pred, true, mean, std)
        # leaving the ExitStack committed every writer (or, on an exception, aborted them all)
        return acc

    def _layer_scores(self, choice, acc: "Accumulated", n_units: int) -> dict:
        """The scores ``done.json`` keeps for a layer: per test split, with how penalties were chosen."""
        dc = self.cfg.decoder
        alpha_info = acc.alpha_info(choice, dc.alphas)
        scores = {split: a.result() for split, a in acc.scores.items()}
        common = {"alpha_per": dc.alpha_per, "n_voxels": self.n_voxels, "n_units": int(n_units),
                  "cv_profile_corr": choice.report or alpha_info.pop("cv", {}), **alpha_info}
        if dc.kind == "sparse":
            common["voxels_per_unit"] = min(dc.n_voxels, self.n_voxels)
        if OOF in scores:
            # penalties of the out-of-fold rows, fold by fold (chosen within each fold's training images)
            scores[OOF]["fold_alphas"] = None if choice.alpha is None else [float(a) for a in choice.fold_alphas]
        return {split: {**scores[split], **common, **({OOF: scores[OOF]} if OOF in scores else {})}
                for split in self.tests}


@dataclass
class Accumulated:
    """What decoding a range of units accumulates: scores per split, and how often each penalty was
    chosen (with the summed per-unit CV scores when chosen per unit)."""

    scores: dict[str, DecodingScores]
    alpha_counts: dict[float, int] = field(default_factory=dict)
    cv_sum: np.ndarray | None = None
    cv_units: np.ndarray | None = None
    n_units: int = 0

    def add_penalties(self, result) -> None:
        for a, n in zip(*np.unique(result.alphas, return_counts=True)):
            self.alpha_counts[float(a)] = self.alpha_counts.get(float(a), 0) + int(n)
        self.n_units += len(result.alphas)
        if result.scores is not None:  # running sums of the valid per-unit CV scores
            self.cv_sum = np.nansum(result.scores, axis=1) + (0 if self.cv_sum is None else self.cv_sum)
            self.cv_units = (~np.isnan(result.scores)).sum(1) + (0 if self.cv_units is None else self.cv_units)

    def alpha_info(self, choice, alphas: list[float]) -> dict:
        """The layer's penalty: the chosen one, or (per unit) the median over units, the share of units at
        each penalty and the mean CV score of each."""
        if choice.alpha is not None:
            return {"alpha": choice.alpha}
        counts = self.alpha_counts
        total = sum(counts.values())
        info = {"alpha_share": {f"{a:g}": round(n / total, 4) for a, n in sorted(counts.items())}}
        cum = np.cumsum([counts[a] for a in sorted(counts)])
        info["alpha"] = float(sorted(counts)[int(np.searchsorted(cum, total / 2))])  # median over units
        if self.cv_sum is not None:
            info["cv"] = {f"{a:g}": round(float(v / max(c, 1)), 4) for a, v, c in zip(alphas, self.cv_sum, self.cv_units)}
        return info

    def state(self) -> dict[str, np.ndarray]:
        """Arrays a part's marker keeps, from which ``merge`` rebuilds the layer's sums."""
        out = {f"{split}/{k}": v for split, acc in self.scores.items() for k, v in acc.state().items()}
        out["alpha_values"] = np.array(sorted(self.alpha_counts), dtype=float)
        out["alpha_counts"] = np.array([self.alpha_counts[a] for a in sorted(self.alpha_counts)], dtype=np.int64)
        if self.cv_sum is not None:
            out["cv_sum"], out["cv_units"] = self.cv_sum, self.cv_units
        out["n_units"] = np.array(self.n_units)
        return out

    @classmethod
    def merge(cls, states: list[dict], splits: list[str]) -> "Accumulated":
        """The accumulation of consecutive parts, from their markers in unit order."""
        scores = {split: DecodingScores.merge([{k.split("/", 1)[1]: v for k, v in st.items() if k.startswith(f"{split}/")}
                                               for st in states]) for split in splits}
        out = cls(scores)
        for st in states:
            for a, n in zip(st["alpha_values"], st["alpha_counts"]):
                out.alpha_counts[float(a)] = out.alpha_counts.get(float(a), 0) + int(n)
            if "cv_sum" in st:
                out.cv_sum = st["cv_sum"] + (0 if out.cv_sum is None else out.cv_sum)
                out.cv_units = st["cv_units"] + (0 if out.cv_units is None else out.cv_units)
            out.n_units += int(st["n_units"])
        return out


def decode_subject_roi(cfg: Config, store: ExperimentStore, subject: str, roi: str, train: SplitData,
                       tests: dict[str, SplitData], device, train_names: list[str]) -> dict:
    """Decode every configured layer (every part) of one subject and ROI in this process; return scores
    per layer and split. Layers whose ``done.json`` matches the current fingerprint are skipped."""
    train, tests = hold_out(train, tests, train_names, cfg.eval.validation_fraction, cfg.seed)
    work = RoiWork(cfg, store, subject, roi, train, tests, device, train_names)
    items = [it for it in work_items(cfg, store) if (it.subject, it.roi) == (subject, roi)]
    for item in items:
        if not work.files(item.layer).item_done(item, work.key, work.splits):
            work.decode(item, [it for it in items if it.layer == item.layer])
    return {layer: work.files(layer).scores(work.key, work.splits) for layer in cfg.features.layers}


def _sweep(paths: list[Path]) -> int:
    """Delete the temporary files of ``paths`` (whoever left them: the caller holds the claim under which
    they are written); return how many."""
    from shared.runs import TMP_MARK

    left = [tmp for p in paths for tmp in p.parent.glob(f".{p.name}{TMP_MARK}*")]
    for tmp in left:
        tmp.unlink(missing_ok=True)
    return len(left)
