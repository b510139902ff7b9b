"""Stage 2 verb ``run``: train the generator, reconstruct test images, score, export."""

from __future__ import annotations

import logging
import time

import numpy as np

from shared import metrics as M
from shared.config import Config
from shared.datasets import bdata_path, load_images, load_split, split_files, split_image_names
from shared.device import resolve_device
from shared.errors import UserError
from shared.report import RECON_COLUMNS, recon_rows, write_summary, write_table
from shared.runs import Run, record_run, update_metrics
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


def score(recon: np.ndarray, true: np.ndarray, comparator, device, rng: np.random.Generator) -> dict:
    """Reconstruction metrics of ``recon`` against ``true`` (both ``(n, 3, S, S)`` in [0, 1])."""
    import torch

    corr = M.corr_matrix(recon, true)
    out = {
        "pairwise_id_pixel": M.summarise(M.pairwise_identification(None, None, corr=corr)),
        "pixcorr": M.summarise(np.diag(corr)),
        "ssim": M.summarise(M.ssim(recon, true)),
        "nway10_id_pixel": M.nway_identification(corr, min(10, len(true)), rng),
    }
    with torch.no_grad():
        fr = comparator(torch.from_numpy(recon).to(device))
        ft = comparator(torch.from_numpy(true).to(device))
    per_layer = {k: M.summarise(M.pairwise_identification(fr[k].flatten(1).cpu().numpy(),
                                                          ft[k].flatten(1).cpu().numpy())) for k in ft}
    out["pairwise_id_comparator"] = float(np.mean(list(per_layer.values())))
    out["pairwise_id_comparator_layers"] = per_layer
    return out


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
    inputs = {f"{s}/{split}": bdata_path(cfg, s, split) for s in cfg.data.subjects for split in ["train", *cfg.data.test]}
    run_ = Run(cfg, "stage2", str(device), inputs)
    train_names = split_image_names(cfg, "train")
    transforms, train_inputs = fit_transforms(cfg, store, train_names)
    train_images = load_images(cfg.data_root / cfg.data.train.images, train_names, gc.image_size)
    key = training_key(cfg, {})
    G = train_generator(cfg, train_inputs, [tf.rms for tf in transforms], train_images, device,
                        cfg.work_path / "generator" / key, run_.dir, key)

    comparator = FeatureNet(cfg.eval.comparator_network, cfg.eval.comparator_weights, cfg.eval.comparator_layers,
                            input_size=max(gc.image_size, 64)).to(device).eval()
    rng = np.random.default_rng(cfg.seed)
    spec = parse_weights(cfg.features.weights)
    results = cfg.results_path
    first_split, first_roi = next(iter(cfg.data.test)), cfg.data.rois[0]
    recon_metrics: dict = {}
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
                folder = cfg.data_root / split_files(cfg, split).images
                true = load_images(folder, names, gc.image_size)
                recons = {
                    "wgan_gp": _generate(G, dec, device),
                    "pixel_ridge": ridge_recon[split],
                    "nearest_train": nearest_train(dec, train_inputs, train_images),
                }
                if roi == first_roi:  # the ceiling does not depend on the ROI
                    recons["wgan_gp_true_features"] = _generate(G, true_inputs(store, transforms, split, names), device)
                suffix = "" if roi == first_roi else f"[{roi}]"
                for method, rec in recons.items():
                    s = score(rec, true, comparator, device, rng)
                    if method == "pixel_ridge":
                        s["alpha"] = ridge_alpha
                    recon_metrics.setdefault(split, {}).setdefault(subject, {})[method + suffix] = s
                name = "grid" if (split == first_split and roi == first_roi and subject == cfg.data.subjects[0]) \
                    else f"grid_{subject}_{roi}_{split}"
                image_grid({"true": true, **{m: r for m, r in recons.items()}}, results / f"{name}.png",
                           title=f"{subject} {roi}, {split} test images; features {cfg.features.network} "
                                 f"[{spec.label}]", columns=cfg.eval.grid_columns)
    path = results / "metrics.json"
    metrics = None
    record_run(path, "stage2", run_.dir)
    for split, rec in recon_metrics.items():
        key_name = "reconstruction" if split == first_split else f"reconstruction_{split}"
        metrics = update_metrics(path, key_name, rec)
        write_table(results / key_name, recon_rows(rec), RECON_COLUMNS)
    write_summary(results, metrics)
    run_.finish(generator_key=key)
    log.info("stage 2 done in %.0f s; results in %s", time.time() - t0, results)


VERBS = {
    "run": (run, "train the generator (resumable), reconstruct test images, score beside baselines, export grids"),
}
