"""Cross-field validation of a loaded ``Config``: choices, ranges, layer names, and that the judge is
independent of every network a training loss uses. Types alone are checked while loading."""

from __future__ import annotations

from typing import Any

from shared.config.schema import (
    DECODER_BACKENDS,
    DECODER_KINDS,
    GENERATOR_STARTS,
    PUBLISHED,
    RESERVED_SPLITS,
    NETWORKS,
    SIM_STIMULI,
    TRAIN_INPUTS,
    VALIDATION_METRICS,
    Config,
    FeaturesConfig,
    GeneratorConfig,
    SimulationConfig,
)
from shared.errors import UserError


def _one_of(key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        raise UserError(f"'{key}' must be one of {list(allowed)}; {value!r} was given")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"'{key}' must be positive; {value!r} was given: give a value above 0")


def validate(cfg: Config) -> None:
    """Check values that types alone cannot (choices, ranges, layer names)."""
    from shared.layers import check_layers, is_pixels, pixels_side  # torch-free layer tables

    _one_of("data.source", cfg.data.source, ("simulated", "bdata", "matrix"))
    _one_of("simulation.format", cfg.simulation.format, ("bdata", "matrix"))
    _one_of("simulation.stimuli", cfg.simulation.stimuli, SIM_STIMULI)
    _check_trials(cfg.simulation)
    if cfg.reads_matrix:
        _one_of("data.matrix.order", cfg.data.matrix.order, ("auto", "F", "C"))
        _one_of("data.matrix.voxel_sample_axis", cfg.data.matrix.voxel_sample_axis, (0, 1))
        if not cfg.data.matrix.file:
            raise UserError("'data.matrix.file' is empty; name the .mat or .npz file (relative to data.root)")
        if len(cfg.data.rois) != 1:
            raise UserError(f"a matrix dataset has one set of voxels: 'data.rois' must hold one name, e.g. [all]; "
                            f"{cfg.data.rois} was given")
        if len(cfg.data.subjects) > 1 and "{subject}" not in cfg.data.matrix.file:
            raise UserError("several subjects need one matrix file each: put {subject} in data.matrix.file")
    _one_of("features.network", cfg.features.network, NETWORKS)
    _one_of("generator.perceptual_network", cfg.generator.perceptual_network, NETWORKS)
    _one_of("eval.judge_network", cfg.eval.judge_network, NETWORKS)
    _one_of("generator.train_inputs", cfg.generator.train_inputs, TRAIN_INPUTS)
    _one_of("decoder.kind", cfg.decoder.kind, DECODER_KINDS)
    _one_of("lab.import_kind", cfg.lab.import_kind, ("decoded", "true_features"))
    _one_of("decoder.alpha_per", cfg.decoder.alpha_per, ("layer", "unit"))
    _one_of("decoder.backend", cfg.decoder.backend, DECODER_BACKENDS)
    if cfg.decoder.alpha_per == "unit" and cfg.decoder.kind != "ridge":
        raise UserError("'decoder.alpha_per' = 'unit' needs decoder.kind=ridge (the sparse decoder takes one "
                        "penalty per layer)")
    if cfg.decoder.backend == "fastl2lir" and cfg.decoder.kind != "sparse":
        raise UserError("'decoder.backend' = 'fastl2lir' needs decoder.kind=sparse (dense ridge runs in torch)")
    if cfg.decoder.n_voxels < 1:
        raise UserError(f"'decoder.n_voxels' must be at least 1; {cfg.decoder.n_voxels} was given")
    if not cfg.experiment or "/" in cfg.experiment:
        raise UserError(f"'experiment' must be a plain name without '/'; {cfg.experiment!r} was given")
    if cfg.experiment == "compare":
        raise UserError("'experiment' must not be 'compare': work/compare and results/compare hold compare's cache "
                        "and tables; choose another name")
    if not cfg.data.subjects:
        raise UserError("'data.subjects' must list at least one subject, e.g. [sub-01]")
    if not cfg.data.rois:
        raise UserError("'data.rois' must list at least one ROI, e.g. [VC]")
    if not cfg.data.test:
        raise UserError("'data.test' must name at least one test set, e.g. natural")
    check_layers("features.layers", cfg.features.network, cfg.features.layers, pixels=True)
    for layer in cfg.features.layers:
        if (pixels_side(layer) or 0) > cfg.features.input_size:
            raise UserError(f"'features.layers' entry {layer!r} is larger than the images the feature network sees "
                            f"(features.input_size {cfg.features.input_size}); use pixels{cfg.features.input_size} "
                            f"or less")
    _one_of("generator.start", cfg.generator.start, GENERATOR_STARTS)
    if cfg.generator.start == "decoded_pixels" and not any(is_pixels(la) for la in cfg.generator.condition_layers):
        raise UserError("'generator.start' = 'decoded_pixels' needs a pixels layer in 'generator.condition_layers' "
                        "(and in 'features.layers'), e.g. pixels16")
    check_layers("generator.perceptual_layers", cfg.generator.perceptual_network, cfg.generator.perceptual_layers)
    check_layers("eval.judge_layers", cfg.eval.judge_network, cfg.eval.judge_layers)
    for layer in cfg.generator.condition_layers:
        if layer not in cfg.features.layers:
            raise UserError(
                f"'generator.condition_layers' entry {layer!r} is not decoded; add it to 'features.layers' "
                f"({cfg.features.layers})"
            )
    for layer in cfg.generator.consistency_layers:
        if layer not in cfg.generator.condition_layers:
            raise UserError(f"'generator.consistency_layers' entry {layer!r} is not a condition layer "
                            f"({cfg.generator.condition_layers})")
    if not cfg.generator.condition_layers:
        raise UserError("'generator.condition_layers' must name at least one layer")
    for key, value in [
        ("decoder.alphas", min(cfg.decoder.alphas) if cfg.decoder.alphas else 0),
        ("decoder.chunk_units", cfg.decoder.chunk_units),
        ("generator.iterations", cfg.generator.iterations),
        ("generator.batch_size", cfg.generator.batch_size),
        ("generator.n_critic", cfg.generator.n_critic),
        ("generator.tick_every", cfg.generator.tick_every),
        ("features.batch_size", cfg.features.batch_size),
        ("features.input_size", cfg.features.input_size),
        ("eval.judge_input_size", cfg.eval.judge_input_size),
        ("simulation.image_size", cfg.simulation.image_size),
        ("simulation.reliability_median", cfg.simulation.reliability_median),
    ]:
        _positive(key, value)
    for name, spec in [("train", cfg.data.train), *cfg.data.test.items()]:
        for field_name in ("bdata", "image_list", "images"):
            if not getattr(spec, field_name):
                raise UserError(f"'data.{'train' if name == 'train' else 'test.' + name}.{field_name}' is empty; "
                                f"give the file or folder (relative to data.root)")
    reserved = [name for name in RESERVED_SPLITS if name in cfg.data.test]
    if reserved:
        raise UserError(f"'data.test' must not name a test set {reserved[0]!r} (the names 'train', 'train_oof', "
                        f"'validation' and 'info' are the training images', their out-of-fold features', their "
                        f"hold-out's and the run information's); call it e.g. 'natural'")
    if cfg.decoder.part_units < 0:
        raise UserError(f"'decoder.part_units' must be 0 (whole layers) or a number of units; "
                        f"{cfg.decoder.part_units} was given")
    if cfg.decoder.cv_units < 1:
        raise UserError(f"'decoder.cv_units' must be at least 1; {cfg.decoder.cv_units} was given")
    if cfg.simulation.noise_shared + cfg.simulation.noise_spatial > 1:
        raise UserError("'simulation.noise_shared' + 'simulation.noise_spatial' must not exceed 1 "
                        "(they are shares of each voxel's noise variance)")
    if min(cfg.simulation.n_test_natural, cfg.simulation.n_train_images) < 2:
        raise UserError("'simulation.n_train_images' and 'simulation.n_test_natural' must be at least 2")
    if cfg.decoder.cv_folds < 2 and (len(cfg.decoder.alphas) > 1 or cfg.decoder.train_oof):
        raise UserError(f"'decoder.cv_folds' must be at least 2 to choose among alphas or decode training images "
                        f"out of fold; {cfg.decoder.cv_folds} was given")
    if not 0 < cfg.simulation.reliability_median < 1:
        raise UserError(f"'simulation.reliability_median' must lie in (0, 1); {cfg.simulation.reliability_median} was given")
    if not 8 <= cfg.generator.image_size <= 512:
        raise UserError(f"'generator.image_size' must lie in [8, 512]; {cfg.generator.image_size} was given")
    if any(s < 1 for s in cfg.eval.pixel_ridge_sizes):
        raise UserError(f"'eval.pixel_ridge_sizes' must all be at least 1 px (each is capped at generator.image_size; "
                        f"[] tries image_size halved up to three times); {cfg.eval.pixel_ridge_sizes} was given")
    from shared.weights import parse_weights

    for key, value in [
        ("features.weights", cfg.features.weights),
        ("generator.perceptual_weights", perceptual_weights(cfg)),
        ("eval.judge_weights", cfg.eval.judge_weights),
    ]:
        parse_weights(value, key)
    _check_generator(cfg)
    _check_judge(cfg)
    _check_methods(cfg)


def _check_trials(sim: SimulationConfig) -> None:
    if sim.n_train_trials != 0 and sim.n_train_trials < sim.n_train_images:
        raise UserError(f"'simulation.n_train_trials' must be 0 (n_train_images x n_train_reps) or at least "
                        f"simulation.n_train_images ({sim.n_train_images}), as every training image is shown once; "
                        f"{sim.n_train_trials} was given")


def _check_methods(cfg: Config) -> None:
    m = cfg.methods
    for name in m.run:
        _one_of("methods.run", name, PUBLISHED)
    if len(set(m.run)) != len(m.run):
        raise UserError(f"'methods.run' names a method twice: {m.run}")
    for layer in m.inversion_layers:
        if layer not in cfg.features.layers:
            raise UserError(f"'methods.inversion_layers' entry {layer!r} is not decoded; add it to "
                            f"'features.layers' ({cfg.features.layers})")
    for key in ("inversion_iterations", "inversion_batch", "inversion_lr_start", "coder_latent", "coder_iterations",
                "coder_lr", "latent_tune_lr"):
        _positive(f"methods.{key}", getattr(m, key))
    if m.latent_tune_steps < 0 or m.vae_beta < 0:
        raise UserError("'methods.latent_tune_steps' and 'methods.vae_beta' must not be negative; "
                        f"{m.latent_tune_steps} and {m.vae_beta} were given")
    if m.inversion_lr_end < 0 or not 0 <= m.inversion_momentum < 1:
        raise UserError("'methods.inversion_lr_end' must not be negative and 'methods.inversion_momentum' must lie "
                        f"in [0, 1); {m.inversion_lr_end} and {m.inversion_momentum} were given")


def perceptual_weights(cfg: Config) -> str:
    """The perceptual network's weights ('' in the config means features.weights)."""
    return resolve_perceptual_weights(cfg.generator, cfg.features)


def resolve_perceptual_weights(generator: GeneratorConfig, features: FeaturesConfig) -> str:
    """``perceptual_weights`` from the generator and feature sections alone."""
    return generator.perceptual_weights or features.weights


def _check_generator(cfg: Config) -> None:
    g = cfg.generator
    for name in ("loss_adversarial", "loss_pixel", "loss_perceptual", "loss_feature_matching",
                 "loss_feature_consistency", "loss_ssim", "mix_true", "mix_corrupted", "mix_oof", "lambda_gp"):
        if getattr(g, name) < 0:
            raise UserError(f"'generator.{name}' must not be negative (0 switches it off); {getattr(g, name)} was given")
    if not any(getattr(g, f"loss_{k}") > 0 for k in ("adversarial", "pixel", "perceptual", "feature_matching",
                                                      "feature_consistency", "ssim")):
        raise UserError("every generator.loss_* weight is 0; switch at least one loss on (e.g. generator.loss_pixel=1)")
    if g.train_inputs == "mix" and g.mix_true + g.mix_corrupted + g.mix_oof <= 0:
        raise UserError("'generator.train_inputs' = 'mix' needs a positive generator.mix_true, mix_corrupted or mix_oof")
    uses_oof = g.train_inputs == "oof" or (g.train_inputs == "mix" and g.mix_oof > 0)
    if uses_oof and not cfg.decoder.train_oof:
        raise UserError("'generator.train_inputs' uses out-of-fold features but decoder.train_oof is false; "
                        "set decoder.train_oof=true (and rerun stage 1) or generator.train_inputs=corrupted")
    if not 0 <= g.ema_decay < 1:
        raise UserError(f"'generator.ema_decay' must lie in [0, 1); {g.ema_decay} was given")
    if not 0 <= g.condition_corr_min <= 1:
        raise UserError(f"'generator.condition_corr_min' must lie in [0, 1]; {g.condition_corr_min} was given")
    if g.max_rollbacks < 0:
        raise UserError(f"'generator.max_rollbacks' must not be negative (0 stops at the first dead tick); "
                        f"{g.max_rollbacks} was given")
    if not 0 < g.rollback_lr_factor < 1:
        raise UserError(f"'generator.rollback_lr_factor' must lie in (0, 1); {g.rollback_lr_factor} was given")
    e = cfg.eval
    if not 0 <= e.validation_fraction < 0.5:
        raise UserError(f"'eval.validation_fraction' must lie in [0, 0.5) (0 = no hold-out); {e.validation_fraction} "
                        f"was given")
    _one_of("eval.validation_metric", e.validation_metric, VALIDATION_METRICS)
    if e.score_size != 0 and not 8 <= e.score_size <= 1024:
        raise UserError(f"'eval.score_size' must be 0 (the stimuli's own size) or lie in [8, 1024]; {e.score_size} "
                        f"was given")


def _same_network(net_a: str, weights_a: str, net_b: str, weights_b: str) -> bool:
    from shared.weights import parse_weights

    a, b = parse_weights(weights_a), parse_weights(weights_b)
    same_weights = (a.kind, a.seed) == (b.kind, b.seed) and (
        a.path is None or b.path is None or a.path.resolve() == b.path.resolve())
    return net_a == net_b and same_weights


def judge_users(cfg: Config) -> list[tuple[str, str, str, str]]:
    """``(what, config keys, network, weights)`` of every network a loss or an optimisation looks through,
    which the judge must not be: the feature network (the generator is conditioned on its features, feature
    consistency, nearest_train and the inversions match them) and, when its loss is on, the perceptual
    network (also the coders' and end_to_end's)."""
    g = cfg.generator
    users = [("the generator's conditioning", "features.network/weights", cfg.features.network, cfg.features.weights)]
    if g.loss_perceptual > 0:
        users.append(("the perceptual loss", "generator.perceptual_network/perceptual_weights",
                      g.perceptual_network, perceptual_weights(cfg)))
    return users


def _check_judge(cfg: Config) -> None:
    """The judge never scores with a network whose features a training loss uses (by the settings' labels;
    ``shared.evaluation.check_judge_independent`` compares the weights themselves)."""
    e = cfg.eval
    for what, keys, net, weights in judge_users(cfg):
        if _same_network(e.judge_network, e.judge_weights, net, weights):
            raise UserError(f"eval.judge_network/judge_weights ({e.judge_network}, {e.judge_weights}) is the network "
                            f"{what} uses, so its scores would not be independent; give the judge other weights "
                            f"or change {keys}")
