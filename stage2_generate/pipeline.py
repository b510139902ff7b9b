"""Stage 2 verb ``run``: train the generator, reconstruct test images, score, export."""

from __future__ import annotations

import logging
import time
import zlib

import numpy as np

from shared import metrics as M
from shared.config import FEATURE_METHODS, Config
from shared.datasets import average_by_name, bdata_files, load_split, native_size, split_image_names, split_images
from shared.device import distributed, process_device
from shared.errors import UserError
from shared.holdout import validation_split
from shared.report import VALIDATION_SECTION, recon_columns, recon_rows, section_key, write_summary, write_table
from shared.runs import Run, atomic_write_bytes, atomic_write_json, update_metrics
from shared.store import ExperimentStore
from shared.weights import parse_weights

log = logging.getLogger(__name__)

VALIDATION = "__validation__"  # the held-out training images, reconstructed beside the test sets


def judge_name(network: str, layer: str) -> str:
    """The field's name of an identification metric: ``alexnet2`` for AlexNet conv2, else ``<net>_<layer>``."""
    if network == "alexnet" and layer.startswith("conv"):
        return f"alexnet{layer[4:]}"
    return f"{network}_{layer}"


def judge_features(judge, images: np.ndarray, device, batch: int = 50) -> dict[str, np.ndarray]:
    """Judge-network features of images ``(n, 3, S, S)``, flattened per layer."""
    import torch

    out: dict[str, list] = {}
    with torch.no_grad():
        for s in range(0, len(images), batch):
            for k, v in judge(torch.from_numpy(images[s:s + batch]).to(device)).items():
                out.setdefault(k, []).append(v.flatten(1).float().cpu().numpy())
    return {judge_name(judge.network, k): np.concatenate(v) for k, v in out.items()}


def score(recon: np.ndarray, true: np.ndarray, true_feats: dict[str, np.ndarray], judge, device,
          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image reconstruction metrics of ``recon`` against ``true`` (both ``(n, 3, S, S)`` in
    [0, 1]); ``true_feats`` are ``judge_features`` of ``true``. ``metrics.json`` holds their means."""
    corr = M.corr_matrix(recon, true)
    fr = judge_features(judge, recon, device)
    return {
        "pixcorr": np.diag(corr).copy(),
        "ssim": M.ssim(recon, true),
        **{k: M.pairwise_identification(fr[k], true_feats[k]) for k in true_feats},
        "pairwise_id_pixel": M.pairwise_identification(None, None, corr=corr),
        "nway10_id_pixel": M.nway_hits(corr, min(10, len(true)), rng),
    }


def _rows(names: list[str], wanted: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[n] for n in wanted], dtype=int)


def _only(data, names: list[str]):
    """The trials of ``data`` (a ``SplitData``) whose stimulus is one of ``names``."""
    from dataclasses import replace

    keep = np.isin(data.names, list(names))
    return replace(data, X=data.X[keep], names=data.names[keep])


def _validation(inputs: list[list[np.ndarray]], images: np.ndarray, judge, device, metric: str, seed: int,
                size: int):
    """The scorer of the held-out training images ``images`` (pixel metrics and the judge's), at ``size`` px
    like the test images: every tick's, and the final validation table's."""
    from stage2_generate.watch import Validation

    images = at_size(images, size)
    truth = judge_features(judge, images, device)
    gray = is_grayscale(images)

    def mean_scores(recon: np.ndarray, with_judge: bool = True) -> dict[str, float]:
        recon = at_size(recon, size)
        recon = np.repeat(recon.mean(axis=1, keepdims=True), 3, axis=1) if gray else recon
        if not with_judge:
            return {"pixcorr": M.summarise(np.diag(M.corr_matrix(recon, images))), "ssim": M.summarise(M.ssim(recon, images))}
        per = score(recon, images, truth, judge, device, np.random.default_rng(seed))
        return {k: M.summarise(v) for k, v in per.items() if k in ("pixcorr", "ssim") or k in truth}

    return Validation(inputs, mean_scores, metric)


def at_size(images: np.ndarray, size: int) -> np.ndarray:
    """``(n, C, S, S)`` images resampled to ``size`` (area-averaged when shrunk, bilinear when enlarged),
    in [0, 1]; images already at ``size`` are returned as they are."""
    import torch

    if images.shape[-1] == size:
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    mode = {"mode": "area"} if size < images.shape[-1] else {"mode": "bilinear", "align_corners": False}
    return torch.nn.functional.interpolate(t, size=(size, size), **mode).clamp(0, 1).numpy()


def _size_label(size: int, native: int | None, generator_size: int) -> str:
    if size == native:
        return "the stimuli's own size"
    if native is None:
        return "the generator's size; the stimuli have no one square size" if size == generator_size \
            else "set by eval.score_size; the stimuli have no one square size"
    return f"resampled: the stimuli are {native} px (eval.score_size={size})"


def is_grayscale(images: np.ndarray) -> bool:
    """True when every image has equal channels (a grayscale stimulus set)."""
    return bool(np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 0], images[:, 2]))


def out_of_fold_inputs(cfg: Config, store: ExperimentStore, transforms, train_names: list[str]) -> list[np.ndarray]:
    """Stage 1's out-of-fold decoded features of the training images, per layer
    ``(n_subjects x n_rois, n_images, *shape)``, transformed like decoded test features and
    kept in float16 (half the memory; z-scored features need no more precision)."""
    from stage2_generate.conditioning import decoded_inputs

    sources = []
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            missing = [layer for layer in cfg.generator.condition_layers
                       if not store.decoded_file(subject, roi, layer, "train_oof").is_file()]
            if missing:
                raise UserError(f"the feature store has no out-of-fold features of {subject} {roi} {missing[0]} "
                                f"(generator.train_inputs={cfg.generator.train_inputs}); rerun stage 1 with "
                                f"decoder.train_oof=true (generator.train_inputs=oof or mix and the validation hold-out read them), "
                                f"or set generator.train_inputs=corrupted and eval.validation_fraction=0")
            sources.append((subject, roi))
    out = [np.empty((len(sources), len(train_names), *tf.out_shape), dtype=np.float16) for tf in transforms]
    for k, (subject, roi) in enumerate(sources):
        for i, x in enumerate(decoded_inputs(store, transforms, subject, roi, "train_oof", names=train_names)[0]):
            out[i][k] = x
    return out


def _check_inputs(cfg: Config, store: ExperimentStore) -> None:
    """Every input stage 2 reads, checked before it writes anything: the networks' weights,
    the fMRI files and images, and every feature-store array (its attributes and stimuli)."""
    from shared.config import perceptual_weights
    from shared.datasets import check_inputs
    from shared.featnet import check_weights

    check_inputs(cfg)
    check_weights(cfg.eval.judge_network, cfg.eval.judge_weights)
    if cfg.generator.loss_perceptual > 0:
        check_weights(cfg.generator.perceptual_network, perceptual_weights(cfg))
    gc = cfg.generator
    inverted = (cfg.methods.inversion_layers or cfg.features.layers) \
        if any(m in FEATURE_METHODS for m in cfg.methods.run) else []
    names_of = {split: split_image_names(cfg, split) for split in ["train", *cfg.data.test]}
    for layer in dict.fromkeys([*gc.condition_layers, *inverted]):
        store.open_true(layer, "train", names=names_of["train"]).close()
        for split in cfg.data.test:
            store.open_true(layer, split, names=names_of[split]).close()
            first = None
            for subject in cfg.data.subjects:
                for roi in cfg.data.rois:
                    with store.open_decoded(subject, roi, layer, split) as arr:
                        names = set(arr.names)
                    first = first or (subject, roi, names)
                    if names != first[2]:
                        raise UserError(f"the decoded {split} features of {subject} {roi} are not of the same images "
                                        f"as those of {first[0]} {first[1]}; rerun stage 1")


def run(cfg: Config) -> None:
    import torch

    from shared.featnet import FeatureNet
    from shared.plotting import image_grid
    from stage2_generate.baselines import NearestTrain, VoxelRidge, pixel_ridge
    from stage2_generate.conditioning import decoded_inputs, fit_transforms, true_inputs
    from stage2_generate.methods import Methods
    from stage2_generate.methods import preflight as check_methods
    from stage2_generate.models import generate
    from stage2_generate.recon_files import grid_title, save_reconstructions
    from stage2_generate.train import ConditionSampler, train_generator, training_key, training_record
    from stage2_generate.train import preflight as check_generator_files

    t0 = time.time()
    device = process_device(cfg.device)
    rank, world = distributed(device)
    gc = cfg.generator
    store = ExperimentStore(cfg)
    for layer in gc.condition_layers:
        if not store.true_file(layer, "train").is_file():
            raise UserError(f"the feature store {store.root} has no {layer} features of experiment "
                            f"'{cfg.experiment}'; run stage 1 first: python -m stage1_decode run --config <same config>")
    _check_inputs(cfg, store)
    e = cfg.eval
    all_names = split_image_names(cfg, "train")
    # the validation hold-out: no generator batch and no method's fit ever sees these images
    train_names, val_names = validation_split(all_names, e.validation_fraction, cfg.seed)
    fit_rows, val_rows = _rows(all_names, train_names), _rows(all_names, val_names)
    transforms, all_inputs = fit_transforms(cfg, store, all_names, train_names if val_names else None)
    train_inputs = [x[fit_rows] for x in all_inputs]
    all_images = split_images(cfg, "train", all_names, gc.image_size)
    train_images, val_images = all_images[fit_rows], all_images[val_rows]
    del all_images
    gray = is_grayscale(train_images)
    uses_oof = gc.train_inputs == "oof" or (gc.train_inputs == "mix" and gc.mix_oof > 0)
    oof = out_of_fold_inputs(cfg, store, transforms, all_names) if uses_oof or val_names else None
    sampler = ConditionSampler.from_config(
        cfg, [torch.from_numpy(x).to(device) for x in train_inputs],
        [torch.from_numpy(x[:, fit_rows]).to(device) for x in oof] if uses_oof else None,
        [tf.rms for tf in transforms])
    val_inputs = [[x[k, val_rows].astype(np.float32) for x in oof] for k in range(len(oof[0]))] if val_names else []
    del oof
    inputs = [store.true_file(layer, "train") for layer in gc.condition_layers]
    if uses_oof or val_names:
        inputs += [store.decoded_file(s, r, layer, "train_oof") for s in cfg.data.subjects for r in cfg.data.rois
                   for layer in gc.condition_layers]
    key = training_key(cfg, 1 if gray else 3, inputs)
    ckpt_dir = cfg.work_path / "generator" / key
    check_generator_files(cfg, ckpt_dir, key, [tuple(x.shape[1:]) for x in train_inputs], 1 if gray else 3)
    check_methods(cfg, train_names, train_images, 1 if gray else 3)
    # every input checked: from here on the run writes (a bad input above has touched nothing)
    run_ = Run(cfg, "stage2", str(device), bdata_files(cfg)) if rank == 0 else None
    judge = FeatureNet(e.judge_network, e.judge_weights, e.judge_layers, input_size=e.judge_input_size).to(device).eval() \
        if rank == 0 else None
    native = native_size(cfg)
    size = e.score_size or native or gc.image_size
    validation = _validation(val_inputs, val_images, judge, device, e.validation_metric, cfg.seed, size) \
        if val_names and rank == 0 else None
    G = train_generator(cfg, sampler, transforms, train_images, device, ckpt_dir, run_.dir if run_ else None, key,
                        channels=1 if gray else 3, rank=rank, world=world, validation=validation)
    del sampler
    if rank != 0:  # the other torchrun processes only train
        return
    training = training_record(ckpt_dir)
    log.info("scoring at %d px (%s)", size, _size_label(size, native, gc.image_size))
    for name in ("training.png", "stats.jsonl"):  # the whole training's curves, over resumes and rollbacks
        if (ckpt_dir / name).is_file():
            atomic_write_bytes(cfg.results_path / name, (ckpt_dir / name).read_bytes())
    nearest_train = NearestTrain(train_inputs, train_images)
    methods = Methods(cfg, store, G, train_images, 1 if gray else 3, device, train_names)
    results = cfg.results_path
    first_split, first_roi = next(iter(cfg.data.test)), cfg.data.rois[0]
    recon_metrics: dict = {}
    per_image: dict = {}  # split -> subject -> method -> {"names", metric: per-image values}
    truth: dict[str, tuple] = {}  # split -> (images, judge features, true-feature ceiling), once per split
    validation_scores: dict = {}  # subject -> method -> mean scores on the held-out training images
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            trials = load_split(cfg, subject, "train", roi, average=False) \
                if e.baselines or methods.voxel_names else None
            train = _only(trials, train_names) if trials is not None else None
            tests = {split: load_split(cfg, subject, split, roi, average=True) for split in cfg.data.test}
            voxel_ridge = VoxelRidge(cfg, train, train_names, device) if train is not None else None
            test_voxels = {s: d.X for s, d in tests.items()}
            if val_names and trials is not None:  # the held-out images' trials, averaged like a test set's
                held = _only(trials, val_names)
                test_voxels[VALIDATION] = average_by_name(held.X, held.names, val_names)
            ridge_recon, ridge_alpha = pixel_ridge(cfg, voxel_ridge, train_images, test_voxels) \
                if e.baselines else ({}, None)
            from_voxels = methods.from_voxels(subject, roi, voxel_ridge, test_voxels)
            if val_names:  # every method scored on the held-out images, beside the test scores
                src = cfg.data.subjects.index(subject) * len(cfg.data.rois) + cfg.data.rois.index(roi)
                val_recons = {"wgan_gp": generate(G, val_inputs[src], device), **from_voxels.pop(VALIDATION, {})}
                if e.baselines:
                    val_recons.update(pixel_ridge=ridge_recon.pop(VALIDATION),
                                      nearest_train=nearest_train(val_inputs[src]))
                suffix = "" if roi == first_roi else f"[{roi}]"
                for method, rec in val_recons.items():
                    validation_scores.setdefault(subject, {})[method + suffix] = validation.score(rec)
            for split, d in tests.items():
                dec, names = decoded_inputs(store, transforms, subject, roi, split)
                if list(names) != list(d.names):  # voxel methods' rows follow the brain data's order
                    order = {n: i for i, n in enumerate(d.names)}
                    rows = [order[n] for n in names]
                    from_voxels[split] = {k: v[rows] for k, v in from_voxels[split].items()}
                    if e.baselines:
                        ridge_recon[split] = ridge_recon[split][rows]
                if split not in truth:
                    true = split_images(cfg, split, names, size)
                    ceiling = at_size(generate(G, true_inputs(store, transforms, split, names), device), size)
                    truth[split] = (list(names), true, judge_features(judge, true, device), ceiling)
                    if e.save_reconstructions:  # the stimuli as scored, so figures need nothing but results/
                        save_reconstructions(results / "reconstructions" / "stimuli", split, true, names, gray)
                first_names, true, true_feats, ceiling = truth[split]
                if list(names) != first_names:  # another subject or ROI may list the images in another order
                    index = {n: i for i, n in enumerate(first_names)}
                    if set(names) != set(first_names):
                        raise UserError(f"the decoded {split} features of {subject} {roi} are not of the same images "
                                        f"as those of the first subject and ROI; rerun stage 1")
                    rows = [index[n] for n in names]
                    true, ceiling = true[rows], ceiling[rows]
                    true_feats = {k: v[rows] for k, v in true_feats.items()}
                recons = {"wgan_gp": generate(G, dec, device), **methods.reconstruct(subject, roi, split, names, dec),
                          **from_voxels[split]}
                if e.baselines:
                    recons.update(pixel_ridge=ridge_recon[split], nearest_train=nearest_train(dec))
                recons = {k: at_size(v, size) for k, v in recons.items()}
                if gray:  # a grayscale set is reconstructed and scored in gray
                    recons = {k: np.repeat(v.mean(axis=1, keepdims=True), 3, axis=1) for k, v in recons.items()}
                if roi == first_roi:  # the ceiling does not depend on the ROI
                    recons["wgan_gp_true_features"] = ceiling
                suffix = "" if roi == first_roi else f"[{roi}]"
                for method, rec in recons.items():
                    # n-way distractors drawn per (subject, ROI, test set, method): rows stay comparable
                    rng = np.random.default_rng([cfg.seed, zlib.crc32(f"{subject}/{roi}/{split}/{method}".encode())])
                    per = score(rec, true, true_feats, judge, device, rng)
                    s = {k: M.summarise(v) for k, v in per.items()}
                    per_image.setdefault(split, {}).setdefault(subject, {})[method + suffix] = {
                        "names": list(names), **{k: v.tolist() for k, v in per.items()}}
                    if method == "pixel_ridge":
                        s["alpha"] = ridge_alpha
                    recon_metrics.setdefault(split, {}).setdefault(subject, {})[method + suffix] = s
                    if e.save_reconstructions:
                        save_reconstructions(results / "reconstructions" / subject / roi / split, method, rec,
                                             names, gray)
                name = "grid" if (split == first_split and roi == first_roi and subject == cfg.data.subjects[0]) \
                    else f"grid_{subject}_{roi}_{split}"
                image_grid({"true": true, **recons}, results / f"{name}.png",
                           title=grid_title(cfg, subject, roi, split), columns=cfg.eval.grid_columns)
    sections = {section_key("reconstruction", split, first_split): rec for split, rec in recon_metrics.items()}
    judge_spec = parse_weights(e.judge_weights)
    if val_names:
        sections[VALIDATION_SECTION] = validation_scores
    sections["reconstruction_info"] = {
        "judge": {judge_name(e.judge_network, layer): f"{e.judge_network} {layer}, weights {judge_spec.label}, "
                                                        f"input {e.judge_input_size} px" for layer in e.judge_layers},
        "generator": {"train_inputs": gc.train_inputs, "condition_layers": gc.condition_layers,
                      "losses": {k: getattr(gc, f"loss_{k}") for k in ("adversarial", "pixel", "perceptual",
                                                                       "feature_matching", "feature_consistency")},
                      "perceptual": f"{gc.perceptual_network} {gc.perceptual_layers}", "iterations": gc.iterations,
                      **training},
        "validation": {"fraction": e.validation_fraction, "n_images": len(val_names), "n_train_images":
                       len(train_names), "metric": e.validation_metric},
        "grayscale": gray,
        "score_size": {"pixels": size, "native": native, "label": _size_label(size, native, gc.image_size)},
    }
    if cfg.methods.run:
        sections["reconstruction_info"]["methods"] = methods.info()
    atomic_write_json(results / "per_image.json", per_image)
    metrics = update_metrics(results / "metrics.json", sections, "stage2", run_.dir)
    for key_name, rec in sections.items():
        if key_name != "reconstruction_info":
            write_table(results / ("validation" if key_name == VALIDATION_SECTION else key_name), recon_rows(rec),
                        recon_columns(rec))
    write_summary(results, metrics)
    run_.finish(generator_key=key)
    log.info("stage 2 done in %.0f s; results in %s", time.time() - t0, results)


VERBS = {
    "run": (run, "train the generator (resumable; torchrun for several processes), reconstruct test images, "
                 "score beside baselines, export grids and every reconstruction"),
}
