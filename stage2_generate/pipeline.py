"""Stage 2 verb ``run``: train the generator, reconstruct test images, score, export."""

from __future__ import annotations

import logging
import time

import numpy as np

from shared import metrics as M
from shared.config import Config
from shared.datasets import bdata_files, load_images, load_split, split_files, split_image_names
from shared.device import resolve_device
from shared.errors import UserError
from shared.report import RECON_COLUMNS, recon_rows, section_key, write_summary, write_table
from shared.runs import Run, update_metrics
from shared.store import ExperimentStore
from shared.weights import parse_weights

log = logging.getLogger(__name__)


def _generate(G, inputs: list[np.ndarray], device, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(inputs[0]), batch):
            out.append(G([torch.from_numpy(x[s:s + batch]).to(device) for x in inputs]).cpu().numpy())
    return np.concatenate(out)


def comparator_features(comparator, images: np.ndarray, device) -> dict[str, np.ndarray]:
    """Comparator-network features of images ``(n, 3, S, S)``, flattened per layer."""
    import torch

    with torch.no_grad():
        feats = comparator(torch.from_numpy(images).to(device))
    return {k: v.flatten(1).cpu().numpy() for k, v in feats.items()}


def score(recon: np.ndarray, true: np.ndarray, true_feats: dict[str, np.ndarray], comparator, device,
          rng: np.random.Generator) -> dict:
    """Reconstruction metrics of ``recon`` against ``true`` (both ``(n, 3, S, S)`` in [0, 1]);
    ``true_feats`` are ``comparator_features`` of ``true``."""
    corr = M.corr_matrix(recon, true)
    fr = comparator_features(comparator, recon, device)
    per_layer = {k: M.summarise(M.pairwise_identification(fr[k], true_feats[k])) for k in true_feats}
    return {
        "pairwise_id_pixel": M.summarise(M.pairwise_identification(None, None, corr=corr)),
        "pixcorr": M.summarise(np.diag(corr)),
        "ssim": M.summarise(M.ssim(recon, true)),
        "nway10_id_pixel": M.nway_identification(corr, min(10, len(true)), rng),
        "pairwise_id_comparator": float(np.mean(list(per_layer.values()))),
        "pairwise_id_comparator_layers": per_layer,
    }


def run(cfg: Config) -> None:
    from shared.featnet import FeatureNet
    from shared.plotting import image_grid
    from stage2_generate.baselines import nearest_train, pixel_ridge
    from stage2_generate.conditioning import decoded_inputs, fit_transforms, true_inputs
    from stage2_generate.train import train_generator, training_key

    t0 = time.time()
    device = resolve_device(cfg.device)
    gc = cfg.generator
    store = ExperimentStore(cfg)
    for layer in gc.condition_layers:
        if not store.true_file(layer, "train").is_file():
            raise UserError(f"the feature store {store.root} has no {layer} features of experiment "
                            f"'{cfg.experiment}'; run stage 1 first: python -m stage1_decode run --config <same config>")
    run_ = Run(cfg, "stage2", str(device), bdata_files(cfg))
    train_names = split_image_names(cfg, "train")
    transforms, train_inputs = fit_transforms(cfg, store, train_names)
    train_images = load_images(cfg.data_root / cfg.data.train.images, train_names, gc.image_size)
    key = training_key(cfg)
    G = train_generator(cfg, train_inputs, [tf.rms for tf in transforms], train_images, device,
                        cfg.work_path / "generator" / key, run_.dir, key)

    comparator = FeatureNet(cfg.eval.comparator_network, cfg.eval.comparator_weights, cfg.eval.comparator_layers,
                            input_size=max(gc.image_size, 64)).to(device).eval()
    rng = np.random.default_rng(cfg.seed)
    spec = parse_weights(cfg.features.weights)
    results = cfg.results_path
    first_split, first_roi = next(iter(cfg.data.test)), cfg.data.rois[0]
    recon_metrics: dict = {}
    truth: dict[str, tuple] = {}  # split -> (images, comparator features, true-feature ceiling), once per split
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            train = load_split(cfg, subject, "train", roi, average=False)
            tests = {split: load_split(cfg, subject, split, roi, average=True) for split in cfg.data.test}
            ridge_recon, ridge_alpha = pixel_ridge(cfg, train, train_names, train_images,
                                                   {s: d.X for s, d in tests.items()}, device)
            for split, d in tests.items():
                dec, names = decoded_inputs(store, transforms, subject, roi, split)
                if list(names) != list(d.names):
                    order = {n: i for i, n in enumerate(d.names)}
                    ridge_recon[split] = ridge_recon[split][[order[n] for n in names]]
                if split not in truth:
                    true = load_images(cfg.data_root / split_files(cfg, split).images, names, gc.image_size)
                    ceiling = _generate(G, true_inputs(store, transforms, split, names), device)
                    truth[split] = (true, comparator_features(comparator, true, device), ceiling)
                true, true_feats, ceiling = truth[split]
                recons = {
                    "wgan_gp": _generate(G, dec, device),
                    "pixel_ridge": ridge_recon[split],
                    "nearest_train": nearest_train(dec, train_inputs, train_images),
                }
                if roi == first_roi:  # the ceiling does not depend on the ROI
                    recons["wgan_gp_true_features"] = ceiling
                suffix = "" if roi == first_roi else f"[{roi}]"
                for method, rec in recons.items():
                    s = score(rec, true, true_feats, comparator, device, rng)
                    if method == "pixel_ridge":
                        s["alpha"] = ridge_alpha
                    recon_metrics.setdefault(split, {}).setdefault(subject, {})[method + suffix] = s
                name = "grid" if (split == first_split and roi == first_roi and subject == cfg.data.subjects[0]) \
                    else f"grid_{subject}_{roi}_{split}"
                image_grid({"true": true, **recons}, results / f"{name}.png",
                           title=f"{subject} {roi}, {split} test images; features {cfg.features.network} "
                                 f"[{spec.label}]", columns=cfg.eval.grid_columns)
    sections = {section_key("reconstruction", split, first_split): rec for split, rec in recon_metrics.items()}
    metrics = update_metrics(results / "metrics.json", sections, "stage2", run_.dir)
    for key_name, rec in sections.items():
        write_table(results / key_name, recon_rows(rec), RECON_COLUMNS)
    write_summary(results, metrics)
    run_.finish(generator_key=key)
    log.info("stage 2 done in %.0f s; results in %s", time.time() - t0, results)


VERBS = {
    "run": (run, "train the generator (resumable), reconstruct test images, score beside baselines, export grids"),
}
