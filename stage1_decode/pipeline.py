"""Stage 1 verbs: ``simulate`` and ``run`` (features -> decoders -> decoded features -> scores)."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from shared import metrics as M
from shared.config import Config
from shared.datasets import DataSource, bdata_files, check_inputs, load_split, split_image_names
from shared.device import resolve_device
from shared.errors import UserError
from shared.plotting import decoding_plot
from shared.report import DECODING_COLUMNS, decoding_rows, section_key, write_summary, write_table
from shared.runs import Run, atomic_write_json, update_metrics
from shared.store import ExperimentStore
from shared.weights import parse_weights
from stage1_decode.features import compute_true_features

log = logging.getLogger(__name__)


def ensure_data(cfg: Config) -> None:
    """Write the simulated experiment if the config asks for one (a no-op when present)."""
    if cfg.data.source == "simulated":
        from shared.simulate.experiment import simulate_experiment

        simulate_experiment(cfg)


def simulate(cfg: Config) -> None:
    if cfg.data.source != "simulated":
        raise UserError(f"'data.source' is {cfg.data.source!r}; set data.source=simulated to write a simulated experiment")
    ensure_data(cfg)
    log.info("simulated experiment ready in %s", cfg.data_root)


def run(cfg: Config) -> None:
    from stage1_decode.decode import decode_subject_roi  # imports torch

    from shared.featnet import check_weights

    t0 = time.time()
    ensure_data(cfg)
    src = DataSource.of(cfg)
    check_inputs(src, cfg.decoder.folds_needed)
    check_weights(cfg.features.network, cfg.features.weights)
    device = resolve_device(cfg.device)
    run_ = Run(cfg, "stage1", str(device), bdata_files(src))
    store = ExperimentStore(cfg)
    splits = ["train", *cfg.data.test]
    compute_true_features(cfg, store, device, splits)
    train_names = split_image_names(src, "train")
    spec = parse_weights(cfg.features.weights)

    decoding: dict = {}  # split -> subject -> roi -> layer -> scores
    data_report: dict = {}
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            train = load_split(src, subject, "train", roi, average=False)
            tests = {split: load_split(src, subject, split, roi, average=True) for split in cfg.data.test}
            reliability = M.single_trial_reliability(train.X, train.names)
            finite = reliability[np.isfinite(reliability)]
            median = float(np.median(finite)) if finite.size else None  # None: no image was repeated
            constant = int((train.X.std(axis=0) <= 1e-8).sum())
            if constant:  # z-scoring maps them to 0 in every sample: the decoders ignore them
                log.warning("%s %s: %d of %d voxels are constant over the training trials; they carry no "
                            "information and are z-scored to 0 (ignored)", subject, roi, constant, train.X.shape[1])
            data_report.setdefault(subject, {})[roi] = {
                "n_voxels": int(train.X.shape[1]), "n_constant_voxels": constant,
                "n_train_trials": int(train.X.shape[0]),
                "n_train_images": int(len(set(train.names))), "reliability_median": median,
            }
            log.info("%s %s: %d voxels, median single-trial reliability %s", subject, roi, train.X.shape[1],
                     "n/a (no repeated training images)" if median is None else f"{median:.3f}")
            scores = decode_subject_roi(cfg, store, subject, roi, train, tests, device, train_names)
            for layer, by_split in scores.items():
                for split, s in by_split.items():
                    decoding.setdefault(split, {}).setdefault(subject, {}).setdefault(roi, {})[layer] = s

    results = cfg.results_path
    first = next(iter(cfg.data.test))
    path = results / "metrics.json"
    _drop_stale_sections(path, decoding, first)
    info = {"network": cfg.features.network, "weights": cfg.features.weights, "weights_label": spec.label,
            "layers": cfg.features.layers, "decoder": cfg.decoder.label, "test_set": first,
            "data": f"{cfg.data.source} ({cfg.data_root})"}
    sections = {section_key("decoding", split, first): dec for split, dec in decoding.items()}
    metrics = update_metrics(path, {"experiment": cfg.experiment, "info": info, "data": data_report, **sections},
                             "stage1", run_.dir)
    for key, dec in sections.items():
        write_table(results / key, decoding_rows(dec), DECODING_COLUMNS)
    decoding_plot(decoding[first], cfg.features.layers, results / "decoding.png",
                  title=f"{cfg.features.network} [{spec.label}], {first} test images")
    write_summary(results, metrics)
    run_.finish()
    log.info("stage 1 done in %.0f s; results in %s", time.time() - t0, results)


def _drop_stale_sections(path, decoding: dict, first: str) -> None:
    """Remove decoding and reconstruction sections that this run's decoding supersedes.

    Reconstructions are kept only while the decoded features they came from are unchanged.
    """
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = {section_key("decoding", split, first): dec for split, dec in decoding.items()}
    if all(old.get(k) == v for k, v in new.items()) and all(k in new for k in old if k.startswith("decoding")):
        return
    kept = {k: v for k, v in old.items() if not k.startswith(("decoding", "reconstruction", "runs"))}
    if any(k.startswith("reconstruction") for k in old):
        log.info("decoded features changed: removed the old reconstruction results; rerun stage 2")
        for stale in [*path.parent.glob("grid*.png"), *path.parent.glob("reconstruction*.*"),
                      *path.parent.glob("validation.*"), *path.parent.glob("per_image.json")]:
            stale.unlink()
    atomic_write_json(path, kept)
