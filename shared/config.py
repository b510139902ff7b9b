"""Typed experiment configuration: dataclass schemas, YAML loading, ``--set`` overrides.

A config file is YAML whose keys mirror the nested dataclasses below. Loading merges,
in order: the dataclass defaults, the YAML file, then ``--set key.sub=value``
overrides. Unknown keys and values of the wrong type are ``UserError``s that name the
key (and suggest the closest valid one).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.errors import UserError

NETWORKS = ("vgg19", "alexnet")
SIM_STIMULI = ("natural", "strokes", "shapes")  # simulation.stimuli (shared/simulate/stimuli.py PRESETS)


@dataclass
class SimulationConfig:
    """The simulated experiment written when ``data.source`` is ``simulated``.

    Sizes default to the real study's design (Shen et al. 2019); the demo shrinks
    nothing but the image resolution. Noise is set per voxel from a target single-trial
    reliability (see ``shared/simulate/brain.py``), never tuned against a decoder.
    """

    seed: int = 0
    # 'bdata' writes the real DIR layout (BData files, image lists, image folders); 'matrix' writes one
    # matrix file per subject (data.matrix.*), read back through the matrix reader like a public set's
    format: str = "bdata"
    # Stimuli of the training and 'natural' (or 'test') test images: 'natural' (colourful composed scenes),
    # 'strokes' (handwritten-like digits and letters, thin white strokes on black, grey; MNIST-like) or
    # 'shapes' (binary geometric shapes and letters on a coarse 10 x 10 grid, upscaled; Miyawaki-like)
    stimuli: str = "natural"
    image_size: int = 64
    n_train_images: int = 1200
    n_train_reps: int = 5
    # Training trials in all: 0 = n_train_images x n_train_reps; otherwise every training image once and
    # the rest seeded random repeats (unequal counts, as in small public sets), n_train_reps unused
    n_train_trials: int = 0
    n_test_natural: int = 50
    n_test_natural_reps: int = 24
    n_test_artificial: int = 40
    n_test_artificial_reps: int = 20
    n_test_letter: int = 10
    n_test_letter_reps: int = 12
    subjects: int = 1
    # Voxel counts per ROI, close to the real VC files (about 10-12k voxels in VC).
    voxels_v1: int = 2000
    voxels_v2: int = 2000
    voxels_v3: int = 1700
    voxels_v4: int = 900
    voxels_loc: int = 1400
    voxels_ffa: int = 800
    voxels_ppa: int = 800
    voxels_other: int = 1200
    # Share of a retinotopic voxel's signal variance carried by luminance and colour,
    # relative to its contrast-energy variance (V1-V4 respond mainly to contrast).
    luminance_share: float = 0.05
    colour_share: float = 0.02
    # Median target single-trial reliability of retinotopic voxels (higher ROIs lower).
    reliability_median: float = 0.22
    fixation_jitter_deg: float = 0.3
    image_extent_deg: float = 12.0
    trial_gain_sd: float = 0.15
    # Split of each voxel's noise variance into shared, spatially smooth and independent.
    noise_shared: float = 0.2
    noise_spatial: float = 0.3


@dataclass
class SplitFiles:
    """Where one split's BData file, image-index list and image folder are.

    ``bdata`` may contain ``{subject}``; paths are relative to ``data.root``.
    """

    bdata: str = ""
    image_list: str = ""
    images: str = ""


def _default_tests() -> dict[str, SplitFiles]:
    return {
        "natural": SplitFiles(
            bdata="{subject}_perceptionNaturalImageTest_original_VC.h5",
            image_list="image_list_test.tsv",
            images="images/test",
        )
    }


@dataclass
class MatrixConfig:
    """A matrix dataset (``data.source: matrix``): one .mat (v5 or v7.3) or .npz file per subject.

    Voxels are samples x voxels; images are flattened rows (reshaped to ``image_shape`` in
    ``order``) or whole arrays with the samples on ``sample_axis``. See shared/matrix_data.py.
    """

    file: str = ""  # relative to data.root; may contain {subject}
    train_voxels: str = "X_train"
    test_voxels: str = "X_test"
    train_images: str = "Y_train"
    test_images: str = "Y_test"
    image_shape: list[int] = field(default_factory=list)  # [H, W] or [H, W, C] of flattened images; [] = square
    order: str = "auto"  # flattening: 'F' (MATLAB, column-major), 'C' (NumPy) or 'auto' (F for .mat, C for .npz)
    sample_axis: int = 0  # axis of the samples in whole image arrays (MATLAB stacks often use -1)


@dataclass
class DataConfig:
    """The fMRI experiment: BData files per subject, image lists, stimulus folders."""

    source: str = "simulated"  # 'simulated' (written into root if absent), 'bdata' or 'matrix'
    root: str = "data/demo"
    subjects: list[str] = field(default_factory=lambda: ["sub-01"])
    rois: list[str] = field(default_factory=lambda: ["VC"])
    train: SplitFiles = field(
        default_factory=lambda: SplitFiles(
            bdata="{subject}_perceptionNaturalImageTraining_original_VC.h5",
            image_list="image_list_training.tsv",
            images="images/training",
        )
    )
    test: dict[str, SplitFiles] = field(default_factory=_default_tests)
    # data.source 'matrix': the file and its variables (then data.test is the one split 'test',
    # data.rois one name for the file's voxels, e.g. [all])
    matrix: MatrixConfig = field(default_factory=MatrixConfig)


@dataclass
class FeaturesConfig:
    """The DNN whose layer activations are decoded."""

    network: str = "vgg19"
    weights: str = "imagenet"  # 'imagenet', a .pth path, or 'random:<seed>'
    layers: list[str] = field(default_factory=lambda: ["conv3_4", "conv5_4", "fc7"])
    input_size: int = 224
    batch_size: int = 16


DECODER_KINDS = ("ridge", "sparse")
DECODER_BACKENDS = ("torch", "fastl2lir")


@dataclass
class DecoderConfig:
    """Linear decoders from voxels to features.

    ``ridge``: dense ridge on every voxel of the ROI. ``sparse``: the Kamitani lab's
    voxel-selected ridge (fastl2lir): per unit, the ``n_voxels`` voxels most correlated
    with it on the training trials, then ridge (with a penalised bias) on those only.
    """

    kind: str = "ridge"  # 'ridge' (dense) or 'sparse' (voxel-selected)
    # Candidate ridge penalties; with more than one, the penalty is chosen by
    # cross-validation over image-grouped folds of the training trials.
    alphas: list[float] = field(default_factory=lambda: [1e2, 1e3, 1e4, 1e5])
    alpha_per: str = "layer"  # 'layer' (one penalty per layer) or 'unit' (ridge only)
    n_voxels: int = 500  # voxels per unit of the sparse decoder (the lab's default)
    backend: str = "torch"  # sparse only: 'torch' (ours, GPU when present) or 'fastl2lir' (the package)
    cv_folds: int = 5  # image-grouped folds: penalty choice and out-of-fold training features
    cv_units: int = 2000  # units sampled per layer to score the penalties
    train_oof: bool = True  # also decode the training images out of fold (split 'train_oof' in the store)
    chunk_units: int = 8192  # units per streamed chunk of a layer

    @property
    def label(self) -> str:
        """The decoder's name in the feature store: 'ridge', 'ridge-unit' or 'sparse-500'."""
        if self.kind == "sparse":
            return f"sparse-{self.n_voxels}"
        return "ridge-unit" if self.alpha_per == "unit" else "ridge"


@dataclass
class GeneratorConfig:
    """WGAN-GP generator conditioned on features, with its losses and optimiser.

    Defaults follow Gulrajani et al. 2017: lambda_gp 10, five critic steps per
    generator step, Adam(1e-4, betas=(0.5, 0.9)). Each ``loss_*`` is a weight; 0 turns
    that loss off.
    """

    # Conv layers enter the generator at the block of their own spatial size; fc layers
    # through a learned projection at the first block.
    condition_layers: list[str] = field(default_factory=lambda: ["conv3_4", "conv5_4", "fc7"])
    image_size: int = 64  # any side from 8 to 512 (blocks at S, ceil(S/2), ... down to 4 or more)
    base_channels: int = 64
    iterations: int = 2000  # generator steps
    batch_size: int = 32  # global batch (split across torchrun processes)
    n_critic: int = 5
    lambda_gp: float = 10.0
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    loss_adversarial: float = 0.01  # Wasserstein critic score of the reconstruction
    loss_pixel: float = 1.0  # squared error in pixels over the true image's variance
    loss_perceptual: float = 1.0  # perceptual-network features of reconstruction vs true image
    loss_feature_matching: float = 0.1  # critic features of reconstruction vs true image
    loss_feature_consistency: float = 0.1  # feature-network features of the reconstruction vs its conditioning
    # The perceptual loss's network; weights '' means features.weights. Never the judge (eval.judge_*).
    perceptual_network: str = "vgg19"
    perceptual_weights: str = ""
    perceptual_layers: list[str] = field(default_factory=lambda: ["conv1_2", "conv2_2", "conv3_4"])
    # Feature consistency compares these condition layers ([] = all of them) of the reconstruction.
    consistency_layers: list[str] = field(default_factory=list)
    # What the generator is trained on: 'true' features of the training images, 'corrupted'
    # (true features mixed with noise), 'oof' (stage 1's out-of-fold decoded features of the
    # training images, every subject and ROI) or 'mix' (shares mix_true/mix_corrupted/mix_oof).
    train_inputs: str = "oof"
    mix_true: float = 0.0
    mix_corrupted: float = 0.5
    mix_oof: float = 0.5
    # 'corrupted': each true input is mixed with noise at a random correlation in [condition_corr_min, 1].
    condition_corr_min: float = 0.3
    ema_decay: float = 0.999  # EMA of the generator's weights (used for reconstruction); 0 = off
    bf16: bool = False  # bf16 autocast on GPU (ignored on CPU)
    tick_every: int = 100  # generator steps between status lines, grids, validation scores and checkpoints
    # A tick whose output is dead (no variance across images, or not finite) rolls training back to the
    # last healthy checkpoint with the learning rate times rollback_lr_factor; after max_rollbacks such
    # rollbacks the run stops with one line naming the cause and the fix.
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.3
    seed: int = 0


TRAIN_INPUTS = ("true", "corrupted", "oof", "mix")
VALIDATION_METRICS = ("pixcorr", "ssim", "pixcorr_ssim")


@dataclass
class EvalConfig:
    """Scoring of reconstructions.

    The judge network scores two-way identification by its features (``alexnet2`` and
    ``alexnet5`` for AlexNet conv2/conv5, as in the field); it must differ from every
    network a training loss uses.
    """

    judge_network: str = "alexnet"
    judge_weights: str = "imagenet"
    judge_layers: list[str] = field(default_factory=lambda: ["conv2", "conv5"])
    judge_input_size: int = 224
    pixel_ridge_size: int = 32  # resolution of the voxels-to-pixels baseline (capped at generator.image_size)
    grid_columns: int = 10
    # Held-out training images (all repeats of an image on one side, drawn with the experiment's seed):
    # never in a generator batch nor in any method's fit; their out-of-fold decoded features are scored
    # at every tick, and the reconstruction uses the tick that scores best on them by validation_metric
    # (a pixel metric: the judge only watches, so it stays independent). 0 = no hold-out (last tick).
    validation_fraction: float = 0.1
    # Reconstructions are scored at this side in pixels; 0 = the stimuli's own size when every test
    # stimulus has one square size (so resampling neither helps nor hurts a method), else the
    # generator's image_size. Every method's output is resampled to it (area-averaged when shrunk).
    score_size: int = 0
    validation_metric: str = "pixcorr_ssim"  # 'pixcorr', 'ssim' or 'pixcorr_ssim' (their mean)
    save_reconstructions: bool = True  # every reconstruction as PNG files and one HDF5 file
    baselines: bool = True  # score pixel ridge and nearest training image beside the generator


@dataclass
class MethodsConfig:
    """Published methods run beside the WGAN-GP generator and scored with it (stage 2; see
    ``stage2_generate/methods.py``). ``run`` lists them; [] runs none (the demo)."""

    run: list[str] = field(default_factory=list)  # any of METHODS
    # iterative feature inversion (Shen et al. 2019): layers whose decoded features are matched
    # ([] = features.layers), iterations of momentum gradient descent, the step size at the first and
    # last iteration (a fraction of the variable's SD per step: the generator's z-scored inputs have
    # SD 1, pixels the training images' SD), momentum, images per batch
    inversion_layers: list[str] = field(default_factory=list)
    inversion_iterations: int = 200
    inversion_lr_start: float = 0.03
    inversion_lr_end: float = 0.0
    inversion_momentum: float = 0.9
    inversion_batch: int = 25
    # end_to_end (Shen et al. 2019, Front Comput Neurosci) trains the generator's network, losses (less
    # feature consistency) and steps from voxels. latent_regression and vae train an image coder (an
    # encoder and the generator's network as decoder) on the training stimuli: latent size, steps, Adam's
    # learning rate, the VAE's KL weight; latent_regression then tunes the ridge map from voxels to the
    # autoencoder's latents through the frozen decoder (steps, Adam's learning rate).
    coder_latent: int = 128
    coder_iterations: int = 3000
    coder_lr: float = 0.0005
    vae_beta: float = 1.0
    latent_tune_steps: int = 300
    latent_tune_lr: float = 0.00001


METHODS = ("inversion_dgn", "inversion_pixels", "end_to_end", "latent_regression", "vae")
FEATURE_METHODS = ("inversion_dgn", "inversion_pixels")  # start from the decoded features
VOXEL_METHODS = ("end_to_end", "latent_regression", "vae")  # start from the voxels


@dataclass
class LabConfig:
    """The Kamitani lab's per-image .mat feature files (stage-1 verbs export-lab, import-lab)."""

    root: str = ""  # holds <features.network>/<layer>/<image>.mat and <network>/<layer>/<subject>/<roi>/<image>.mat
    import_kind: str = "decoded"  # what import-lab reads: 'decoded' or 'true_features'


@dataclass
class DownloadConfig:
    """Where stage 1's ``download`` verb finds the Deep Image Reconstruction files (figshare)."""

    api: str = "https://api.figshare.com/v2"  # sizes and MD5s of the collection's files
    collection: int = 7033577
    files_url: str = "https://ndownloader.figshare.com/files/{id}"  # used when the API gives no download_url
    timeout: float = 60.0  # seconds without data before a transfer counts as interrupted
    retries: int = 5  # resumed attempts per file before giving up (a rerun resumes again)


@dataclass
class Config:
    """One experiment: what data, which features, how to decode and generate."""

    experiment: str = "demo"
    seed: int = 0
    device: str = "auto"  # 'auto' (cuda when present), 'cpu', 'cuda', 'cuda:1', ...
    results_dir: str = "results"
    work_dir: str = "work"  # feature store and checkpoints: <work_dir>/<experiment>/
    data: DataConfig = field(default_factory=DataConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    lab: LabConfig = field(default_factory=LabConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)

    @property
    def results_path(self) -> Path:
        return Path(self.results_dir) / self.experiment

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) / self.experiment

    @property
    def data_root(self) -> Path:
        return Path(self.data.root)

    @property
    def reads_matrix(self) -> bool:
        """Whether the experiment is read as a matrix dataset (a real one, or a simulated one written so)."""
        return self.data.source == "matrix" or (self.data.source == "simulated" and self.simulation.format == "matrix")


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (YAML), apply ``values`` (``{dotted key: value}``, e.g. a compare variant),
    then ``key=value`` overrides; validate and return a ``Config``."""
    raw: dict[str, Any] = read_yaml(path, "config file") if path is not None else {}
    for key, value in (values or {}).items():
        _set_dotted(raw, str(key), value)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value (e.g. generator.iterations=100); '{item}' was given")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key.strip(), value)
    cfg = _build(Config, raw, "")
    if cfg.reads_matrix:  # one file holds one training and one test split
        cfg.data.test = {"test": SplitFiles(bdata="-", image_list="-", images="-")}
    validate(cfg)
    return cfg


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in YAML file ``path``; ``what`` names it in the one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist; pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{what} '{path}'{where} is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax "
                        f"there (indentation, brackets, a ':' after each key)") from None
    if not isinstance(raw, dict):
        raise UserError(f"{what} '{path}' must hold a mapping of keys at the top level")
    return raw


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _suggest(key: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(choices))}"


def _build(cls: type, raw: Any, prefix: str, base: Any = None) -> Any:
    """A ``cls`` instance: ``base`` (or the class defaults) with the keys of ``raw`` merged in."""
    import copy

    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise UserError(f"config key '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise UserError(f"unknown config key '{prefix}{key}'{_suggest(str(key), names, prefix)}")
    out = copy.deepcopy(base) if base is not None else cls()
    for name in names:
        if name in raw:
            setattr(out, name, _coerce(hints[name], raw[name], f"{prefix}{name}", getattr(out, name)))
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str, current: Any = None) -> Any:
    """``value`` checked against type ``tp``; mappings merge into ``current`` (the default)."""
    _FIX = "; correct it in the config file or its --set option"  # noqa: N806
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", current)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}{_FIX}")
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}{_FIX}")
        merged = dict(current or {})
        for k, v in value.items():
            merged[str(k)] = _coerce(val_tp, v, f"{key}.{k}", (current or {}).get(str(k)))
        return merged
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; a person means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{key}' must be a number, got {value!r}{_FIX}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}{_FIX}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false, got {value!r}{_FIX}")
        return value
    if tp is str:
        if isinstance(value, bool):  # YAML reads a bare true/false as a boolean
            return "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise UserError(f"config key '{key}' must be a string, got {value!r}{_FIX}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in the schema, not user error


# ------------------------------------------------------------------------ validation


def _one_of(key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        raise UserError(f"'{key}' must be one of {list(allowed)}; {value!r} was given")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"'{key}' must be positive; {value!r} was given: give a value above 0")


def validate(cfg: Config) -> None:
    """Check values that types alone cannot (choices, ranges, layer names)."""
    from shared.layers import check_layers  # torch-free layer tables

    _one_of("data.source", cfg.data.source, ("simulated", "bdata", "matrix"))
    _one_of("simulation.format", cfg.simulation.format, ("bdata", "matrix"))
    _one_of("simulation.stimuli", cfg.simulation.stimuli, SIM_STIMULI)
    _check_trials(cfg.simulation)
    if cfg.reads_matrix:
        _one_of("data.matrix.order", cfg.data.matrix.order, ("auto", "F", "C"))
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
    check_layers("features.layers", cfg.features.network, cfg.features.layers)
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
    if "train" in cfg.data.test or "validation" in cfg.data.test:
        raise UserError("'data.test' must not name a test set 'train' or 'validation' (names of the training images "
                        "and their hold-out); call it e.g. 'natural'")
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
    if cfg.eval.pixel_ridge_size < 1:
        raise UserError(f"'eval.pixel_ridge_size' must be at least 1 (it is capped at generator.image_size); "
                        f"{cfg.eval.pixel_ridge_size} was given")
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
        _one_of("methods.run", name, METHODS)
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
    return cfg.generator.perceptual_weights or cfg.features.weights


def _check_generator(cfg: Config) -> None:
    g = cfg.generator
    for name in ("loss_adversarial", "loss_pixel", "loss_perceptual", "loss_feature_matching",
                 "loss_feature_consistency", "mix_true", "mix_corrupted", "mix_oof", "lambda_gp"):
        if getattr(g, name) < 0:
            raise UserError(f"'generator.{name}' must not be negative (0 switches it off); {getattr(g, name)} was given")
    if not any(getattr(g, f"loss_{k}") > 0 for k in ("adversarial", "pixel", "perceptual", "feature_matching",
                                                      "feature_consistency")):
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
    if e.validation_fraction > 0 and not cfg.decoder.train_oof:
        raise UserError("'eval.validation_fraction' > 0 scores the held-out images' out-of-fold decoded features, but "
                        "decoder.train_oof is false; set decoder.train_oof=true (and rerun stage 1) or "
                        "eval.validation_fraction=0")


def _same_network(net_a: str, weights_a: str, net_b: str, weights_b: str) -> bool:
    from shared.weights import parse_weights

    a, b = parse_weights(weights_a), parse_weights(weights_b)
    same_weights = (a.kind, a.seed) == (b.kind, b.seed) and (
        a.path is None or b.path is None or a.path.resolve() == b.path.resolve())
    return net_a == net_b and same_weights


def _check_judge(cfg: Config) -> None:
    """The judge never scores with a network whose features a training loss uses."""
    g, e = cfg.generator, cfg.eval
    # the generator is conditioned on the feature network's features (nearest_train retrieves by them and
    # the inversion methods match them), so the judge is never the feature network either
    users = [("the generator's conditioning", "features.network/weights", cfg.features.network, cfg.features.weights)]
    if g.loss_perceptual > 0:
        users.append(("the perceptual loss", "generator.perceptual_network/perceptual_weights",
                      g.perceptual_network, perceptual_weights(cfg)))
    for what, keys, net, weights in users:
        if _same_network(e.judge_network, e.judge_weights, net, weights):
            raise UserError(f"eval.judge_network/judge_weights ({e.judge_network}, {e.judge_weights}) is the network "
                            f"{what} uses, so its scores would not be independent; give the judge other weights "
                            f"or change {keys}")


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data (for YAML dumps and hashing)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
