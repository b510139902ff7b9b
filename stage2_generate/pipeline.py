"""Stage 2 verb ``run``: train the generator, reconstruct the test images with every configured method
(``stage2_generate/methods/``), score them all alike (``shared/evaluation.py``), write tables, grids and
every reconstruction."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from shared.config import Config
from shared.datasets import (DataSource, average_by_name, bdata_files, load_split, native_size, seen_in_training,
                             split_image_names, split_images)
from shared.device import distributed, process_device
from shared.errors import UserError
from shared.evaluation import (ValidationScorer, as_scored, check_judge_independent, distractor_rng, is_grayscale,
                               judge_features, judge_name, means, metric_label, score, validation_value)
from shared.holdout import HELD_OUT as VALIDATION, VALIDATION as VALIDATION_SPLIT, validation_split
from shared.report import (RESULT_VERSION, VALIDATION_SECTION, recon_columns, recon_rows, section_key, write_summary,
                           write_table)
from shared.locks import ExperimentLock, acquire_in_order
from shared.runs import Run, atomic_write_bytes, atomic_write_json, sweep_temporary_files, update_metrics
from shared.store import IMPORTED_FROM, ExperimentStore
from shared.weights import parse_weights
from stage2_generate.compare.cache import result_key, result_settings
from stage2_generate.losses import loss_weights

log = logging.getLogger(__name__)



def _rows(names: list[str], wanted: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[n] for n in wanted], dtype=int)


def _finite(images: np.ndarray, method: str, test) -> np.ndarray:
    """``images``, refused in one line when any pixel is not finite (a dead method never scores as NaN)."""
    if not np.isfinite(images).all():
        raise UserError(f"{method} reconstructed {test.subject} {test.roi} {test.split} images with non-finite "
                        f"pixels (its training diverged); look at its log lines, lower its learning rate or drop "
                        f"it from methods.run")
    return images


def _size_label(size: int, native: int | None, generator_size: int) -> str:
    if size == native:
        return "the stimuli's own size"
    if native is None:
        return "the generator's size; the stimuli have no one square size" if size == generator_size \
            else "set by eval.score_size; the stimuli have no one square size"
    return f"resampled: the stimuli are {native} px (eval.score_size={size})"


def stored_decoded_inputs(cfg: Config, store: ExperimentStore, transforms, split: str, names: list[str]
                          ) -> list[np.ndarray]:
    """Stage 1's decoded features of training images, per layer ``(n_subjects x n_rois, len(names), *shape)``,
    transformed like decoded test features and kept in float16 (half the memory; z-scored features need no
    more precision): ``split`` ``train_oof`` (the images methods fit, each decoded out of fold) or
    ``validation`` (the held-out images, decoded by the decoders of the test images)."""
    from stage2_generate.conditioning import decoded_inputs

    what = {"train_oof": "out-of-fold features", VALIDATION_SPLIT: "decoded features of the validation hold-out"}[split]
    sources = []
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            missing = [layer for layer in cfg.generator.condition_layers
                       if not store.decoded_file(subject, roi, layer, split).is_file()]
            if missing:
                fix = ("decoder.train_oof=true (generator.train_inputs=oof or mix read them), or set "
                       "generator.train_inputs=corrupted") if split == "train_oof" else \
                    f"the same eval.validation_fraction={cfg.eval.validation_fraction} (stage 1 decodes the hold-out), " \
                    f"or set eval.validation_fraction=0"
                raise UserError(f"the feature store has no {what} of {subject} {roi} {missing[0]}; rerun stage 1 "
                                f"with {fix}")
            for layer in cfg.generator.condition_layers:
                with store.open_decoded(subject, roi, layer, split) as arr:
                    absent, extra = sorted(set(names) - set(arr.names)), sorted(set(arr.names) - set(names))
                # stage 1 held out other images (another eval.validation_fraction): its decoders may have fit
                # images this run holds out, so its features are refused, not subset
                if absent or extra:
                    odd = (f"lack {len(absent)} of the {len(names)} images asked for (first: {absent[0]})" if absent
                           else f"hold {len(extra)} image(s) this run holds out or lacks (first: {extra[0]})")
                    raise UserError(f"the {what} of {subject} {roi} {layer} {odd}: stage 1 held out other training "
                                    f"images than eval.validation_fraction={cfg.eval.validation_fraction} holds out; "
                                    f"rerun stage 1 with this config (the hold-out is chosen before stage 1, whose "
                                    f"decoders never see it)")
            sources.append((subject, roi))
    out = [np.empty((len(sources), len(names), *tf.out_shape), dtype=np.float16) for tf in transforms]
    for k, (subject, roi) in enumerate(sources):
        for i, x in enumerate(decoded_inputs(store, transforms, subject, roi, split, names=names)[0]):
            out[i][k] = x
    return out


def _check_inputs(cfg: Config, store: ExperimentStore, method_layers: list[str]) -> None:
    """Every input stage 2 reads, checked before it writes anything: the networks' weights,
    the fMRI files and images, and every feature-store array (its attributes and stimuli, and that stage 1
    finished its layer: ``done.json``, written last, unless the lab's files were imported);
    ``method_layers``: the layers methods read beyond the conditioning layers."""
    from shared.config import perceptual_weights
    from shared.datasets import check_inputs
    from shared.featnet import check_weights

    source = DataSource.of(cfg)
    check_inputs(source, cfg.decoder.folds_needed)
    check_weights(cfg.eval.judge_network, cfg.eval.judge_weights)
    if cfg.generator.loss_perceptual > 0:
        check_weights(cfg.generator.perceptual_network, perceptual_weights(cfg))
    check_judge_independent(cfg)
    gc = cfg.generator
    names_of = {split: split_image_names(source, split) for split in ["train", *cfg.data.test]}
    for layer in dict.fromkeys([*gc.condition_layers, *method_layers]):
        store.open_true(layer, "train", names=names_of["train"]).close()
        for split in cfg.data.test:
            store.open_true(layer, split, names=names_of[split]).close()
            first = None
            for subject in cfg.data.subjects:
                for roi in cfg.data.rois:
                    with store.open_decoded(subject, roi, layer, split) as arr:
                        names = set(arr.names)
                        provenance = arr.attrs.get("provenance") or "{}"
                    imported = isinstance(provenance, str) and IMPORTED_FROM in json.loads(provenance)
                    if not imported and not (store.layer_dir(subject, roi, layer) / "done.json").is_file():
                        raise UserError(f"stage 1 has not finished {subject} {roi} {layer}: its arrays are in the "
                                        f"store but not its done.json (a stage-1 process stopped before the end of "
                                        f"that layer, or is still at it); rerun stage 1")
                    first = first or (subject, roi, names)
                    if names != first[2]:
                        raise UserError(f"the decoded {split} features of {subject} {roi} are not of the same images "
                                        f"as those of {first[0]} {first[1]}; rerun stage 1")


def hold_store(cfg: Config) -> ExperimentLock:
    """The feature store's lock, held shared (beside other stage-2 runs, never beside stage 1 writing it) before
    stage 2 reads or hashes any of it; refused, or with ``N2P_WAIT_FOR_LOCKS=1`` waited for, while stage-1
    processes write it, so what stage 2 reads stays as it was read. Taken ``quiet``: a run refused for a bad
    input has written nothing (its ``Run`` names the holder). No store yet: the one-line error saying to run
    stage 1 (nothing made)."""
    if not cfg.work_path.is_dir():
        raise _no_features(cfg, cfg.generator.condition_layers[0])
    return ExperimentLock.acquire(cfg.work_path, f"experiment '{cfg.experiment}' ({cfg.work_path})", shared=True,
                                  quiet=True)


def _no_features(cfg: Config, layer: str) -> UserError:
    return UserError(f"the feature store {ExperimentStore(cfg).root} has no {layer} features of experiment "
                     f"'{cfg.experiment}'; run stage 1 first: python -m stage1_decode run --config <same "
                     f"config> (or, for the lab's feature files, python -m stage1_decode import-lab --config "
                     f"<same config> --set lab.root=<folder> --set lab.import_kind=true_features, and =decoded)")


def training_folders(ckpt_dir: Path, key: str, methods: list) -> dict[Path, str]:
    """The folders a stage-2 run trains in and holds to its end (folder -> what it is): its generator's
    checkpoints and every method's (``Method.lock_folders``), which ``shared.locks.acquire_in_order`` takes at
    once, in one global order."""
    return {ckpt_dir: f"the generator {key} ({ckpt_dir})",
            **{folder: what for m in methods for folder, what in m.lock_folders().items()}}


def run(cfg: Config) -> None:
    """Stage 2 under the store's shared lock (``hold_store``, taken before anything is read) and the locks of
    the folders it trains in (taken in one order); every lock it took, and its run's log handler (``Run``, which
    holds its results folder), is released when it ends or fails."""
    to_release: list = [hold_store(cfg)]  # locks and the run, released in reverse
    try:
        _run(cfg, to_release)
    finally:
        for lock in reversed(to_release):
            lock.release()


def _run(cfg: Config, to_release: list) -> None:
    import torch

    from shared.featnet import FeatureNet
    from shared.plotting import image_grid
    from stage2_generate import methods as registry
    from stage2_generate.conditioning import ConditionSampler, decoded_inputs, fit_transforms
    from stage2_generate.generator_files import preflight as check_generator_files
    from stage2_generate.generator_files import training_key, training_record
    from stage2_generate.imported import adapt as adapt_to_import
    from stage2_generate.recon_files import grid_title, save_reconstructions
    from stage2_generate.train import train_generator
    from stage2_generate.watch import Validation

    t0 = time.time()
    device = process_device(cfg.device)
    rank, world = distributed(device)
    gc, e = cfg.generator, cfg.eval
    store = ExperimentStore(cfg)
    for layer in gc.condition_layers:  # read under the store's lock (``hold_store``): stage 1 is not filling it
        if not store.true_file(layer, "train").is_file():
            raise _no_features(cfg, layer)
    classes = registry.selected(cfg.methods.run, e.baselines, e.blend)
    _check_inputs(cfg, store, [layer for c in classes for layer in c.store_layers(cfg.methods, cfg.features)])
    # decoded features imported from the lab's files: no out-of-fold or hold-out features (a stage-1 store: cfg)
    cfg, lab_import = adapt_to_import(cfg, store, say=rank == 0)
    gc, e = cfg.generator, cfg.eval
    source = DataSource.of(cfg)
    all_names = split_image_names(source, "train")
    # the validation hold-out: no generator batch and no method's fit ever sees these images
    train_names, val_names = validation_split(all_names, e.validation_fraction, cfg.seed)
    fit_rows, val_rows = _rows(all_names, train_names), _rows(all_names, val_names)
    transforms, all_inputs = fit_transforms(gc.condition_layers, gc.image_size, store, all_names,
                                            train_names if val_names else None, cfg.decoder.chunk_units)
    train_inputs = [x[fit_rows] for x in all_inputs]
    all_images = split_images(source, "train", all_names, gc.image_size)
    train_images, val_images = all_images[fit_rows], all_images[val_rows]
    del all_images
    gray = is_grayscale(train_images)
    channels = 1 if gray else 3
    uses_oof = gc.train_inputs == "oof" or (gc.train_inputs == "mix" and gc.mix_oof > 0)
    oof = stored_decoded_inputs(cfg, store, transforms, "train_oof", train_names) if uses_oof else None
    sampler = ConditionSampler.from_settings(
        gc, [torch.from_numpy(x).to(device) for x in train_inputs],
        [torch.from_numpy(x).to(device) for x in oof] if uses_oof else None, [tf.rms for tf in transforms])
    del oof
    # the hold-out's inputs are made as the test images' are: decoded by stage 1's decoders, never out of fold
    held = stored_decoded_inputs(cfg, store, transforms, VALIDATION_SPLIT, val_names) if val_names else None
    val_inputs = [[x[k].astype(np.float32) for x in held] for k in range(len(held[0]))] if val_names else []
    del held
    inputs = [store.true_file(layer, "train") for layer in gc.condition_layers]
    for split, used in (("train_oof", uses_oof), (VALIDATION_SPLIT, bool(val_names))):
        if used:
            inputs += [store.decoded_file(s, r, layer, split) for s in cfg.data.subjects for r in cfg.data.rois
                       for layer in gc.condition_layers]
    key = training_key(cfg, channels, inputs)
    ckpt_dir = cfg.work_path / "generator" / key
    check_generator_files(gc, ckpt_dir, key, [tuple(x.shape[1:]) for x in train_inputs], channels,
                          transforms)
    ctx = registry.Context.of(cfg, store=store, device=device, train_images=train_images, train_names=train_names,
                              channels=channels, transforms=transforms, train_inputs=train_inputs,
                              held_images=val_images if val_names else None)
    methods = [c(ctx) for c in classes]  # every process checks; only rank 0 reconstructs
    for method in methods:
        method.check()
    # every input checked: from here on the run writes (a bad input above has touched nothing)
    run_ = Run(cfg, "stage2", str(device), bdata_files(source), reads_work=True) if rank == 0 else None
    to_release += [run_] if run_ is not None else []  # its results folder's lock and log handler, if the run fails
    # the generator's checkpoints and the folders methods train in: one writer at a time (stage-2 runs of one store
    # may run at once), all taken now in one global order, whatever order subjects, ROIs and methods are listed in
    if rank == 0:
        to_release += acquire_in_order(training_folders(ckpt_dir, key, methods))
        sweep_temporary_files(ckpt_dir)  # a killed run's half-written files: this process now owns the folder
    judge = FeatureNet(e.judge_network, e.judge_weights, e.judge_layers, input_size=e.judge_input_size).to(device).eval() \
        if rank == 0 else None
    native = native_size(source)
    size = e.score_size or native or gc.image_size
    validation = Validation(val_inputs, ValidationScorer(val_images, judge, device, cfg.seed, size),
                            e.validation_metric) if val_names and rank == 0 else None
    ctx.G = train_generator(gc, cfg.features, sampler, transforms, train_images, device, ckpt_dir,
                            run_.dir if run_ else None, key, channels=channels, rank=rank, world=world,
                            validation=validation)
    del sampler
    if rank != 0:  # the other torchrun processes only train
        return
    training = training_record(ckpt_dir)
    log.info("scoring at %d px (%s)", size, _size_label(size, native, gc.image_size))
    for name in ("training.png", "stats.jsonl"):  # the whole training's curves, over resumes and rollbacks
        if (ckpt_dir / name).is_file():
            atomic_write_bytes(cfg.results_path / name, (ckpt_dir / name).read_bytes())
    results = cfg.results_path
    first_split, first_roi = next(iter(cfg.data.test)), cfg.data.rois[0]
    reads_voxels = any(c.reads == "voxels" for c in classes)
    recon_metrics: dict = {}
    per_image: dict = {}  # split -> subject -> method -> {"names", metric: per-image values}
    truth: dict[str, tuple] = {}  # split -> (names, images, judge features), once per split
    validation_scores: dict = {}  # subject -> method -> mean scores on the held-out training images
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            suffix = "" if roi == first_roi else f"[{roi}]"
            trials = load_split(source, subject, "train", roi, average=False) if reads_voxels else None
            held = None
            if val_names:  # the held-out images: every method scored on them, beside the test scores
                src = cfg.data.subjects.index(subject) * len(cfg.data.rois) + cfg.data.rois.index(roi)
                held_trials = trials.of_images(val_names) if trials is not None else None
                held = registry.TestData(subject, roi, VALIDATION, val_names, val_inputs[src],
                                         average_by_name(held_trials.X, held_trials.names, val_names)
                                         if held_trials is not None else None)
            scorer = validation.score if held is not None else None
            train = registry.TrainData(
                ctx, subject, roi, trials.of_images(train_names) if trials is not None else None, held,
                (lambda rec: validation_value(scorer(rec, False), e.validation_metric)) if scorer else None,
                (lambda rec: scorer.values(rec, e.validation_metric)) if scorer else None)
            active = [m.fit(train) for m in methods if roi == first_roi or not m.first_roi_only]
            if held is not None:
                for m in active:
                    if m.validated:
                        validation_scores.setdefault(subject, {})[m.name + suffix] = validation.score(
                            _finite(m.reconstruct(held), m.name, held))
            for split in cfg.data.test:
                d = load_split(source, subject, split, roi, average=True) if reads_voxels else None
                dec, names = decoded_inputs(store, transforms, subject, roi, split)
                if split not in truth:
                    true = split_images(source, split, names, size)
                    truth[split] = (list(names), true, judge_features(judge, true, device))
                    if e.save_reconstructions:  # the stimuli as scored, so figures need nothing but results/
                        save_reconstructions(results / "reconstructions" / "stimuli", split, true, names, gray)
                first_names, true, true_feats = truth[split]
                if list(names) != first_names:  # another subject or ROI may list the images in another order
                    if set(names) != set(first_names):
                        raise UserError(f"the decoded {split} features of {subject} {roi} are not of the same images "
                                        f"as those of the first subject and ROI; rerun stage 1")
                    rows = _rows(first_names, list(names))
                    true, true_feats = true[rows], {k: v[rows] for k, v in true_feats.items()}
                # voxel methods read the brain data's rows in the decoded features' order
                test = registry.TestData(subject, roi, split, list(names), dec,
                                         d.X[_rows(list(d.names), list(names))] if reads_voxels else None)
                recons = {m.name: as_scored(_finite(m.reconstruct(test), m.name, test), size, gray) for m in active}
                for m in active:
                    rec = recons[m.name]
                    per = score(rec, true, true_feats, judge, device, distractor_rng(cfg.seed, split))
                    per_image.setdefault(split, {}).setdefault(subject, {})[m.name + suffix] = {
                        "names": list(names), **{k: v.tolist() for k, v in per.items()}}
                    recon_metrics.setdefault(split, {}).setdefault(subject, {})[m.name + suffix] = {**means(per),
                                                                                                  **m.row()}
                    if e.save_reconstructions:
                        save_reconstructions(results / "reconstructions" / subject / roi / split, m.name, rec,
                                             names, gray)
                name = "grid" if (split == first_split and roi == first_roi and subject == cfg.data.subjects[0]) \
                    else f"grid_{subject}_{roi}_{split}"
                image_grid({"true": true, **recons}, results / f"{name}.png",
                           title=grid_title(cfg, subject, roi, split), columns=cfg.eval.grid_columns)
    sections = {section_key("reconstruction", split, first_split): rec for split, rec in recon_metrics.items()}
    judge_spec = parse_weights(e.judge_weights)
    sections[VALIDATION_SECTION] = validation_scores  # {} without a hold-out: an earlier run's scores go
    sections["reconstruction_info"] = {
        "judge": {judge_name(e.judge_network, layer): f"{e.judge_network} {layer}, weights {judge_spec.label}, "
                                                        f"input {e.judge_input_size} px" for layer in e.judge_layers},
        "generator": {"train_inputs": gc.train_inputs, "condition_layers": gc.condition_layers,
                      "losses": {k: w for k, w in loss_weights(gc).items() if w or k != "ssim"},  # ssim when on
                      "perceptual": f"{gc.perceptual_network} {gc.perceptual_layers}", "iterations": gc.iterations,
                      **training},
        "validation": {"fraction": e.validation_fraction, "n_images": len(val_names), "n_train_images":
                       len(train_names), "metric": e.validation_metric},
        "metric_names": {k: metric_label(k) for rec in recon_metrics.values() for k in recon_columns(rec)[2:]},
        "methods_described": {m.name: m.describe for m in methods if m.describe},
        "grayscale": gray,
        "score_size": {"pixels": size, "native": native, "label": _size_label(size, native, gc.image_size)},
        **({"lab_import": lab_import} if lab_import else {}),
    }
    for split in cfg.data.test:  # some public sets reuse training images as test images: say which
        seen = seen_in_training(source, split)
        if seen:
            log.warning("%d of the %s test images are also training images (equal pixels; first: %s): "
                        "nearest_train retrieves them exactly, by construction", len(seen), split, seen[0])
            sections["reconstruction_info"].setdefault("test_in_train", {})[split] = seen
    if cfg.methods.run:
        info = {"run": list(cfg.methods.run)}
        for m in methods:
            if m.role == "published":
                info.update(m.settings())
        sections["reconstruction_info"]["methods"] = info
    atomic_write_json(results / "per_image.json", per_image)
    # result_key: the hash of every setting the numbers depend on (compare's cache key), so that a committed
    # copy of these results can be told apart from what its config computes today (tests/test_reference_fresh.py)
    metrics = update_metrics(results / "metrics.json", {"result_version": RESULT_VERSION, "result_key": result_key(cfg),
                                                        "result_settings": result_settings(cfg), **sections},
                             "stage2", run_.dir)
    for key_name, rec in sections.items():
        base = results / ("validation" if key_name == VALIDATION_SECTION else key_name)
        if key_name == "reconstruction_info":
            continue
        if rec:
            write_table(base, recon_rows(rec), recon_columns(rec))
        else:  # no hold-out this time: no table, and none left from an earlier run
            for stale in (base.with_suffix(".md"), base.with_suffix(".csv")):
                stale.unlink(missing_ok=True)
    write_summary(results, metrics)
    run_.finish(generator_key=key)
    log.info("stage 2 done in %.0f s; results in %s", time.time() - t0, results)
