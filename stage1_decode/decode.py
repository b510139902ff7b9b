"""Fit decoders from voxels to a layer, predict test and out-of-fold features, score them.

For one (subject, ROI): voxels are z-scored with training-trial statistics and the
decoder (``stage1_decode.decoders``: dense ridge with a penalty per layer or per unit,
or voxel-selected sparse ridge) is prepared once. For each layer the penalty is chosen
by image-grouped cross-validation, then the layer is streamed through in chunks of
units: true training features (z-scored with training statistics) -> decoder ->
decoded test features and out-of-fold decoded training features (split ``train_oof``:
each training image predicted by a decoder fit without it) -> store. Scores
accumulate chunk by chunk, so no step holds a whole layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from shared.config import Config
from shared.datasets import SplitData
from shared.errors import UserError
from shared.evaluation import DecodingScores
from shared.faults import failpoint
from shared.runs import atomic_write_json
from shared.ridge import ImageFolds, Standardiser
from shared.store import ExperimentStore, FeatureArray
from shared.weights import parse_weights

log = logging.getLogger(__name__)


@dataclass
class LayerStats:
    """Training statistics of a layer (over trials), per unit, float32."""

    mean: np.ndarray
    std: np.ndarray


def layer_stats(true_train: FeatureArray, counts: np.ndarray, chunk: int,
                sample: np.ndarray) -> tuple[LayerStats, np.ndarray]:
    """Mean and SD of each unit over training trials (images weighted by repetitions), and
    the columns ``sample`` (sorted unit indices) of the layer, gathered in the same pass."""
    w = (counts / counts.sum())[:, None]
    means, stds, picked = [], [], []
    for units, block in true_train.iter_units(chunk):
        m = (w * block).sum(axis=0)
        v = (w * (block - m) ** 2).sum(axis=0)
        means.append(m)
        stds.append(np.sqrt(v))
        picked.append(block[:, sample[(sample >= units.start) & (sample < units.stop)] - units.start])
    std = np.concatenate(stds).astype(np.float32)
    stats = LayerStats(np.concatenate(means).astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32))
    return stats, np.concatenate(picked, axis=1)


def fingerprint(cfg: Config, store: ExperimentStore, subject: str, roi: str, train: SplitData,
                tests: dict[str, SplitData]) -> str:
    """What decoded features depend on: features, decoder settings, ROI and the input files.

    A ``done.json`` with another fingerprint is stale and its layer is decoded again.
    """
    from dataclasses import asdict

    import sklearn

    def stamp(path):
        st = path.stat()
        return [str(path), st.st_size, int(st.st_mtime)]

    decoder = asdict(cfg.decoder)
    decoder.pop("chunk_units")  # changes memory use, not results
    if cfg.decoder.kind == "ridge":  # settings the dense decoder ignores
        decoder.pop("n_voxels")
        decoder.pop("backend")
    true_files = [store.true_file(layer, split) for layer in cfg.features.layers for split in ["train", *tests]]
    blob = {"features": store.true_expect("*", "*"), "decoder": decoder, "seed": cfg.seed,
            "roi": roi, "subject": subject, "train": stamp(train.path), "tests": {k: stamp(d.path) for k, d in tests.items()},
            "true_files": [stamp(p) for p in true_files if p.is_file()],  # features replaced, e.g. by import-lab
            "folds": sklearn.__version__}  # GroupKFold's assignment may change between releases
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


OOF = "train_oof"  # the split of out-of-fold decoded training features


def decode_subject_roi(cfg: Config, store: ExperimentStore, subject: str, roi: str, train: SplitData,
                       tests: dict[str, SplitData], device, train_names: list[str]) -> dict:
    """Decode every configured layer for one subject and ROI; return scores per layer and split
    (``train_oof`` among the splits when out-of-fold features are decoded).

    Layers whose ``done.json`` marker matches the current fingerprint are skipped.
    """
    from stage1_decode.decoders import make_decoder  # imports torch

    dc = cfg.decoder
    key = fingerprint(cfg, store, subject, roi, train, tests)
    out_splits = [*tests, *([OOF] if dc.train_oof else [])]
    done_paths = {layer: store.decoded_file(subject, roi, layer, "done").with_suffix(".json")
                  for layer in cfg.features.layers}
    out: dict = {}
    for layer, path in done_paths.items():
        if path.is_file():
            done = json.loads(path.read_text())
            if done.get("fingerprint") == key and all(store.decoded_file(subject, roi, layer, s).is_file()
                                                      for s in out_splits):
                log.info("%s %s %s: already decoded (%s)", subject, roi, layer, path)
                out[layer] = done["scores"]
    if len(out) == len(done_paths):
        return out
    x_std = Standardiser().fit(train.X)
    img_index = {n: i for i, n in enumerate(train_names)}
    trial_img = np.array([img_index[n] for n in train.names])
    folds = ImageFolds(trial_img, len(train_names), dc.cv_folds if (len(dc.alphas) > 1 or dc.train_oof) else 1,
                       cfg.seed)
    if len(folds) < 2 and (len(dc.alphas) > 1 or dc.train_oof):
        raise UserError(f"{train.path} has trials of {len(folds.present)} training image(s) for {subject} {roi}; "
                        f"cross-validation needs at least 2 (set decoder.alphas to one value and "
                        f"decoder.train_oof=false)")
    decoder = make_decoder(dc.kind, dc.alpha_per, dc.backend, dc.n_voxels, dc.alphas, x_std.transform(train.X),
                           {split: x_std.transform(d.X) for split, d in tests.items()}, folds, device)
    oof_names = [train_names[i] for i in folds.present]
    if dc.kind == "sparse" and dc.n_voxels >= train.X.shape[1]:
        log.warning("%s %s has %d voxels, not more than decoder.n_voxels=%d: the sparse decoder selects nothing "
                    "and is dense ridge with a bias, much slower than decoder.kind=ridge", subject, roi,
                    train.X.shape[1], dc.n_voxels)
    for layer_index, layer in enumerate(cfg.features.layers):
        if layer in out:
            continue
        if not dc.train_oof:  # out-of-fold features of an earlier run with other settings are stale
            store.decoded_file(subject, roi, layer, OOF).unlink(missing_ok=True)
        with store.open_true(layer, "train", names=train_names) as true_train:
            rng = np.random.default_rng([cfg.seed, layer_index])  # the same units however the run resumed
            n_sample = min(dc.cv_units, true_train.n_units)
            sample = np.sort(rng.choice(true_train.n_units, n_sample, replace=False))
            stats, Y_sample = layer_stats(true_train, folds.counts, dc.chunk_units, sample)
            choice = decoder.choose((Y_sample - stats.mean[sample]) / stats.std[sample], dc.train_oof)
            if choice.alpha is None:
                log.info("%s %s %s: penalties chosen per unit while decoding", subject, roi, layer)
            else:
                log.info("%s %s %s: alpha %g (cv profile r %s)", subject, roi, layer, choice.alpha, choice.report)
            attrs = {"alpha_per": dc.alpha_per, "n_voxels": int(train.X.shape[1]),
                     "provenance": {"bdata": str(train.path), "roi_key": train.roi_key}}
            if choice.alpha is not None:
                attrs["alpha"] = choice.alpha
            scores, alpha_info = _decode_layer(cfg, store, subject, roi, layer, true_train, stats, decoder, choice,
                                               tests, oof_names if dc.train_oof else None, folds.present, attrs)
        common = {"alpha_per": dc.alpha_per, "n_voxels": int(train.X.shape[1]),
                  "n_units": int(true_train.n_units), "cv_profile_corr": choice.report or alpha_info.pop("cv", {}),
                  **alpha_info}
        if dc.kind == "sparse":
            common["voxels_per_unit"] = min(dc.n_voxels, int(train.X.shape[1]))
        if OOF in scores:
            # penalties of the out-of-fold rows, fold by fold (chosen within each fold's training images)
            scores[OOF]["fold_alphas"] = None if choice.alpha is None else [float(a) for a in choice.fold_alphas]
        out[layer] = {split: {**scores[split], **common, **({OOF: scores[OOF]} if OOF in scores else {})}
                      for split in tests}
        atomic_write_json(done_paths[layer], {"fingerprint": key, "scores": out[layer]})  # written last
    return {layer: out[layer] for layer in cfg.features.layers}


def _decode_layer(cfg: Config, store: ExperimentStore, subject: str, roi: str, layer: str, true_train: FeatureArray,
                  stats: LayerStats, decoder, choice, tests: dict[str, SplitData],
                  oof_names: list[str] | None, oof_rows: np.ndarray, attrs: dict) -> tuple[dict, dict]:
    """Stream one layer through the decoder; write decoded features; return scores per split
    (and ``train_oof``) and how penalties were chosen."""
    from contextlib import ExitStack

    from tqdm import tqdm

    spec = parse_weights(cfg.features.weights)
    splits = {split: list(d.names) for split, d in tests.items()}
    if oof_names is not None:
        splits[OOF] = oof_names
    alpha_counts: dict[float, int] = {}
    cv_sum, cv_units = None, 0
    with ExitStack() as stack:
        trues, writers, scores = {}, {}, {}
        for split, names in splits.items():
            if split != OOF:
                trues[split] = stack.enter_context(store.open_true(layer, split))
            writers[split] = stack.enter_context(store.writer(
                store.decoded_file(subject, roi, layer, split), names, true_train.n_units,
                {**store.decoded_expect(subject, roi, layer, split), "unit_shape": list(true_train.unit_shape),
                 "weights_label": spec.label, **attrs}))
            scores[split] = DecodingScores(len(names))
        rows = {split: trues[split].rows_for(splits[split]) for split in trues}
        n_chunks = -(-true_train.n_units // cfg.decoder.chunk_units)
        for units, block in tqdm(true_train.iter_units(cfg.decoder.chunk_units), total=n_chunks,
                                 desc=f"decode {subject}/{roi}/{layer}", unit="chunk", leave=False):
            mean, std = stats.mean[units], stats.std[units]
            result = decoder.decode((block - mean) / std, choice, oof_names is not None)
            for a, n in zip(*np.unique(result.alphas, return_counts=True)):
                alpha_counts[float(a)] = alpha_counts.get(float(a), 0) + int(n)
            if result.scores is not None:  # running sums of the valid per-unit CV scores
                cv_sum = np.nansum(result.scores, axis=1) + (0 if cv_sum is None else cv_sum)
                cv_units = (~np.isnan(result.scores)).sum(1) + cv_units
            failpoint("decode.chunk")
            decoded = dict(result.tests)
            if oof_names is not None:
                decoded[OOF] = result.oof
            for split, pred_z in decoded.items():
                pred = pred_z * std + mean
                writers[split].write_units(units, pred)
                true = block[oof_rows] if split == OOF else trues[split].read(rows[split], units)
                scores[split].add(pred, true, mean, std)
    # leaving the ExitStack committed every writer (or, on an exception, aborted them all)
    total = sum(alpha_counts.values())
    info = {}
    if choice.alpha is None:  # per unit: the share of units at each penalty, and the mean CV score of each
        info["alpha_share"] = {f"{a:g}": round(n / total, 4) for a, n in sorted(alpha_counts.items())}
        cum = np.cumsum([alpha_counts[a] for a in sorted(alpha_counts)])
        info["alpha"] = float(sorted(alpha_counts)[int(np.searchsorted(cum, total / 2))])  # median over units
        if cv_sum is not None:
            info["cv"] = {f"{a:g}": round(float(v / max(c, 1)), 4)
                          for a, v, c in zip(cfg.decoder.alphas, cv_sum, cv_units)}
    else:
        info["alpha"] = choice.alpha
    return {split: acc.result() for split, acc in scores.items()}, info
