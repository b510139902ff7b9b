"""Fit ridge decoders from voxels to a layer, predict test features, score them.

For one (subject, ROI): voxels are z-scored with training-trial statistics and the
kernel is factorised once (``shared.ridge.KernelRidge``). For each layer the penalty
is chosen by image-grouped cross-validation on a sample of units, then the layer is
streamed through in chunks of units: true training features (z-scored with training
statistics) -> hat-matrix product -> decoded features (back in feature units) -> store.
Scores accumulate chunk by chunk, so no step holds a whole layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from shared import metrics as M
from shared.config import Config
from shared.datasets import SplitData
from shared.runs import atomic_write_json
from shared.ridge import KernelRidge, Standardiser, cv_hats, select_alpha, trials_to_images
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


class _ScoreAccumulator:
    """Accumulates decoding scores of one test split over chunks of units."""

    def __init__(self, n: int):
        self.profile: list[np.ndarray] = []
        self.sp = np.zeros(n)
        self.st = np.zeros(n)
        self.spp = np.zeros(n)
        self.stt = np.zeros(n)
        self.cross = np.zeros((n, n))  # sum over units of z_pred[i] * z_true[j]
        self.units = 0

    def add(self, pred: np.ndarray, true: np.ndarray, stats_mean: np.ndarray, stats_std: np.ndarray) -> None:
        self.profile.append(M.profile_correlation(pred, true))
        zp = ((pred - stats_mean) / stats_std).astype(np.float64)
        zt = ((true - stats_mean) / stats_std).astype(np.float64)
        self.sp += zp.sum(1)
        self.st += zt.sum(1)
        self.spp += (zp**2).sum(1)
        self.stt += (zt**2).sum(1)
        self.cross += zp @ zt.T
        self.units += pred.shape[1]

    def result(self) -> dict:
        u = self.units
        cov = self.cross - np.outer(self.sp, self.st) / u
        var_p = self.spp - self.sp**2 / u
        var_t = self.stt - self.st**2 / u
        corr = cov / np.sqrt(np.outer(var_p, var_t) + 1e-30)
        return {
            "profile_corr": M.summarise(np.concatenate(self.profile)),
            "pattern_corr": M.summarise(np.diag(corr)),
            "pairwise_id": M.summarise(M.pairwise_identification(None, None, corr=corr)),
        }


def fingerprint(cfg: Config, store: ExperimentStore, subject: str, roi: str, train: SplitData,
                tests: dict[str, SplitData]) -> str:
    """What decoded features depend on: features, decoder settings, ROI and the input files.

    A ``done.json`` with another fingerprint is stale and its layer is decoded again.
    """
    from dataclasses import asdict

    def stamp(path):
        st = path.stat()
        return [str(path), st.st_size, int(st.st_mtime)]

    blob = {"features": store.true_expect("*", "*"), "decoder": asdict(cfg.decoder), "seed": cfg.seed,
            "roi": roi, "subject": subject, "train": stamp(train.path), "tests": {k: stamp(d.path) for k, d in tests.items()}}
    blob["decoder"].pop("chunk_units")  # changes memory use, not results
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def decode_subject_roi(cfg: Config, store: ExperimentStore, subject: str, roi: str, train: SplitData,
                       tests: dict[str, SplitData], device, train_names: list[str]) -> dict:
    """Decode every configured layer for one subject and ROI; return scores per layer and split.

    Layers whose ``done.json`` marker matches the current fingerprint are skipped.
    """
    key = fingerprint(cfg, store, subject, roi, train, tests)
    done_paths = {layer: store.decoded_file(subject, roi, layer, "done").with_suffix(".json")
                  for layer in cfg.features.layers}
    out: dict = {}
    for layer, path in done_paths.items():
        if path.is_file():
            done = json.loads(path.read_text())
            if done.get("fingerprint") == key and all(store.decoded_file(subject, roi, layer, s).is_file() for s in tests):
                log.info("%s %s %s: already decoded (%s)", subject, roi, layer, path)
                out[layer] = done["scores"]
    if len(out) == len(done_paths):
        return out
    x_std = Standardiser().fit(train.X)
    ridge = KernelRidge(x_std.transform(train.X), device)
    img_index = {n: i for i, n in enumerate(train_names)}
    trial_img = np.array([img_index[n] for n in train.names])
    counts = np.bincount(trial_img, minlength=len(train_names)).astype(np.float64)
    E = trials_to_images(trial_img, len(train_names), ridge.device)
    cv = cv_hats(ridge, trial_img, cfg.decoder.alphas, cfg.decoder.cv_folds, cfg.seed)
    hat_cache: dict[float, dict] = {}
    for layer_index, layer in enumerate(cfg.features.layers):
        if layer in out:
            continue
        with store.open_true(layer, "train", names=train_names) as true_train:
            rng = np.random.default_rng([cfg.seed, layer_index])  # the same units however the run resumed
            n_sample = min(cfg.decoder.cv_units, true_train.n_units)
            sample = np.sort(rng.choice(true_train.n_units, n_sample, replace=False))
            stats, Y_sample = layer_stats(true_train, counts, cfg.decoder.chunk_units, sample)
            Yz_sample = (Y_sample - stats.mean[sample]) / stats.std[sample]
            alpha, cv_scores = select_alpha(cv, trial_img, Yz_sample, cfg.decoder.alphas)
            log.info("%s %s %s: alpha %g (cv profile r %s)", subject, roi, layer, alpha, cv_scores)
            if alpha not in hat_cache:  # one Cholesky per penalty, shared by the layers that chose it
                hat_cache[alpha] = {split: ridge.hat(x_std.transform(d.X), alpha) @ E for split, d in tests.items()}
            scores = _decode_layer(cfg, store, subject, roi, layer, true_train, stats, hat_cache[alpha], tests,
                                   {"alpha": alpha, "n_voxels": int(train.X.shape[1]),
                                    "provenance": {"bdata": str(train.path), "roi_key": train.roi_key}})
        out[layer] = {split: {**scores[split], "alpha": alpha, "n_voxels": int(train.X.shape[1]),
                              "n_units": int(true_train.n_units), "cv_profile_corr": cv_scores}
                      for split in tests}
        atomic_write_json(done_paths[layer], {"fingerprint": key, "scores": out[layer]})  # written last
    return {layer: out[layer] for layer in cfg.features.layers}


def _decode_layer(cfg: Config, store: ExperimentStore, subject: str, roi: str, layer: str, true_train: FeatureArray,
                  stats: LayerStats, hats: dict, tests: dict[str, SplitData], attrs: dict) -> dict:
    """Stream one layer through the hat matrices; write decoded features; return scores per split."""
    from contextlib import ExitStack

    from tqdm import tqdm

    spec = parse_weights(cfg.features.weights)
    device = next(iter(hats.values())).device
    with ExitStack() as stack:
        trues, writers, scores = {}, {}, {}
        for split, d in tests.items():
            trues[split] = stack.enter_context(store.open_true(layer, split))
            writers[split] = stack.enter_context(store.writer(
                store.decoded_file(subject, roi, layer, split), d.names, true_train.n_units,
                {**store.decoded_expect(subject, roi, layer, split), "unit_shape": list(true_train.unit_shape),
                 "weights_label": spec.label, **attrs}))
            scores[split] = _ScoreAccumulator(len(d.names))
        rows = {split: trues[split].rows_for(d.names) for split, d in tests.items()}
        n_chunks = -(-true_train.n_units // cfg.decoder.chunk_units)
        for units, block in tqdm(true_train.iter_units(cfg.decoder.chunk_units), total=n_chunks,
                                 desc=f"decode {subject}/{roi}/{layer}", unit="chunk", leave=False):
            Yz = torch.as_tensor((block - stats.mean[units]) / stats.std[units], device=device)
            for split in tests:
                pred = (hats[split] @ Yz).cpu().numpy() * stats.std[units] + stats.mean[units]
                writers[split].write_units(units, pred)
                scores[split].add(pred, trues[split].read(rows[split], units), stats.mean[units], stats.std[units])
    # leaving the ExitStack committed every writer (or, on an exception, aborted them all)
    return {split: acc.result() for split, acc in scores.items()}
