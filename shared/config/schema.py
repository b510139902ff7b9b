"""The config schema: typed dataclasses mirroring the YAML keys, and the tuples of allowed choices.

Each dataclass's fields are its section's keys with their defaults; ``Config`` nests them all.
Loading is in ``loading.py``, cross-field checks in ``checks.py``. Every field says what it means in a ``# comment``
ending its line (or, alone, the comment lines right above it): ``make docs`` writes docs/config.md from them
(``tools/doc_config.py``) and fails on a field without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

NETWORKS = ("vgg19", "alexnet")
SIM_STIMULI = ("natural", "strokes", "shapes")  # simulation.stimuli (shared/simulate/stimuli.py PRESETS)


@dataclass
class SimulationConfig:
    """The simulated experiment written when ``data.source`` is ``simulated``.

    Sizes default to the real study's design (Shen et al. 2019); the demo shrinks
    nothing but the image resolution. Noise is set per voxel from a target single-trial
    reliability (see ``shared/simulate/brain.py``), never tuned against a decoder.
    """

    seed: int = 0  # seeds the simulated stimuli, voxels and trials (the experiment's seed is another)
    # 'bdata' writes the real DIR layout (BData files, image lists, image folders); 'matrix' writes one
    # matrix file per subject (data.matrix.*), read back through the matrix reader like a public set's
    format: str = "bdata"
    # Stimuli of the training and 'natural' (or 'test') test images: 'natural' (colourful composed scenes),
    # 'strokes' (handwritten-like digits and letters, thin white strokes on black, grey; MNIST-like) or
    # 'shapes' (binary geometric shapes and letters on a coarse 10 x 10 grid, upscaled; Miyawaki-like)
    stimuli: str = "natural"
    image_size: int = 64  # side of the simulated stimuli in pixels
    n_train_images: int = 1200  # distinct training images
    n_train_reps: int = 5  # repeats of each training image, one run per repeat
    # Training trials in all: 0 = n_train_images x n_train_reps; otherwise every training image once and
    # the rest seeded random repeats (unequal counts, as in small public sets), n_train_reps unused
    n_train_trials: int = 0
    n_test_natural: int = 50  # images of the 'natural' test set (the matrix format's 'test'), drawn as the training ones
    n_test_natural_reps: int = 24  # repeats of each of them (averaged before prediction)
    n_test_artificial: int = 40  # images of the 'artificial' test set (coloured shapes), when data.test names one
    n_test_artificial_reps: int = 20  # repeats of each of them
    n_test_letter: int = 10  # images of the 'letter' test set, when data.test names one
    n_test_letter_reps: int = 12  # repeats of each of them
    subjects: int = 1  # not read: the simulator writes the subjects of data.subjects (kept in simulation.json)
    # Voxel counts per ROI, close to the real VC files (about 10-12k voxels in VC).
    voxels_v1: int = 2000  # V1 voxels
    voxels_v2: int = 2000  # V2 voxels
    voxels_v3: int = 1700  # V3 voxels
    voxels_v4: int = 900  # V4 voxels
    voxels_loc: int = 1400  # LOC voxels
    voxels_ffa: int = 800  # FFA voxels
    voxels_ppa: int = 800  # PPA voxels
    voxels_other: int = 1200  # VC voxels in none of the ROIs above
    # Share of a retinotopic voxel's signal variance carried by luminance and colour,
    # relative to its contrast-energy variance (V1-V4 respond mainly to contrast).
    luminance_share: float = 0.05  # luminance term's variance over the contrast-energy term's
    colour_share: float = 0.02  # colour term's variance over the contrast-energy term's
    # Median target single-trial reliability of retinotopic voxels (higher ROIs lower).
    reliability_median: float = 0.22
    fixation_jitter_deg: float = 0.3  # SD of each trial's fixation offset, in degrees of visual angle
    image_extent_deg: float = 12.0  # the visual angle the stimulus spans, in degrees
    trial_gain_sd: float = 0.15  # SD of each trial's multiplicative response gain
    # Split of each voxel's noise variance into shared, spatially smooth and independent.
    noise_shared: float = 0.2  # share shared by all voxels (global factors)
    noise_spatial: float = 0.3  # share spatially smooth over cortex; the rest is independent per voxel


@dataclass
class SplitFiles:
    """Where one split's BData file, image-index list and image folder are.

    ``bdata`` may contain ``{subject}``; paths are relative to ``data.root``.
    """

    bdata: str = ""  # BData file (HDF5); {subject} stands for each subject
    image_list: str = ""  # image list: each image's file name and 1-based image_index, tab- or comma-separated
    images: str = ""  # folder of the stimulus images the list names


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

    Voxels are samples x voxels (or voxels x samples, ``voxel_sample_axis: 1``); images are flattened rows (reshaped to ``image_shape`` in
    ``order``) or whole arrays with the samples on ``sample_axis``. See shared/matrix_data.py.
    """

    file: str = ""  # relative to data.root; may contain {subject}
    train_voxels: str = "X_train"  # variable of the training voxels (samples x voxels)
    test_voxels: str = "X_test"  # variable of the test voxels (samples x voxels)
    train_images: str = "Y_train"  # variable of the training stimuli (flattened rows or whole arrays)
    test_images: str = "Y_test"  # variable of the test stimuli
    image_shape: list[int] = field(default_factory=list)  # [H, W] or [H, W, C] of flattened images; [] = square
    order: str = "auto"  # flattening: 'F' (MATLAB, column-major), 'C' (NumPy) or 'auto' (F for .mat, C for .npz)
    sample_axis: int = 0  # axis of the samples in whole image arrays (MATLAB stacks often use -1)
    voxel_sample_axis: int = 0  # axis of the samples in the voxel matrices: 0 (samples x voxels) or 1 (voxels x samples)


@dataclass
class DataConfig:
    """The fMRI experiment: BData files per subject, image lists, stimulus folders."""

    source: str = "simulated"  # 'simulated' (written into root if absent), 'bdata' or 'matrix'
    root: str = "data/demo"  # folder the split files' paths are relative to
    subjects: list[str] = field(default_factory=lambda: ["sub-01"])  # subject names: each one's files fill in {subject}
    rois: list[str] = field(default_factory=lambda: ["VC"])  # ROI_<name> masks (VC, LVC, HVC, V1 ...); a matrix set: one name
    # the training split's files (the matrix format reads data.matrix instead)
    train: SplitFiles = field(
        default_factory=lambda: SplitFiles(
            bdata="{subject}_perceptionNaturalImageTraining_original_VC.h5",
            image_list="image_list_training.tsv",
            images="images/training",
        )
    )
    # test sets by name, each with its split's files; simulated sets may be natural, artificial or letter, and
    # the names RESERVED_SPLITS are taken
    test: dict[str, SplitFiles] = field(default_factory=_default_tests)
    # data.source 'matrix': the file and its variables (then data.test is the one split 'test',
    # data.rois one name for the file's voxels, e.g. [all])
    matrix: MatrixConfig = field(default_factory=MatrixConfig)


@dataclass
class FeaturesConfig:
    """The DNN whose layer activations are decoded."""

    network: str = "vgg19"  # one of NETWORKS (torchvision)
    weights: str = "imagenet"  # 'imagenet', a .pth path, or 'random:<seed>'
    # layers decoded: the network's (conv3_4, fc7 ...) or pixels<N>, the stimulus itself at N x N pixels
    layers: list[str] = field(default_factory=lambda: ["conv3_4", "conv5_4", "fc7"])
    input_size: int = 224  # side in pixels the stimuli are resized to for the network
    batch_size: int = 16  # images per forward pass of the network


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
    part_units: int = 0  # split layers into work items of about this many units (0: whole layers)

    @property
    def folds_needed(self) -> int:
        """The training images the decoder's cross-validation needs at least: ``cv_folds`` when it
        cross-validates (several penalties, or out-of-fold features), else 0."""
        return self.cv_folds if len(self.alphas) > 1 or self.train_oof else 0

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
    base_channels: int = 64  # width of the generator's and the critic's blocks (more: slower, more capacity)
    iterations: int = 2000  # generator steps
    batch_size: int = 32  # global batch (split across torchrun processes)
    n_critic: int = 5  # critic steps per generator step
    lambda_gp: float = 10.0  # weight of the critic's gradient penalty
    lr: float = 1e-4  # Adam's learning rate, generator and critic
    beta1: float = 0.5  # Adam's first beta
    beta2: float = 0.9  # Adam's second beta
    loss_adversarial: float = 0.01  # Wasserstein critic score of the reconstruction
    loss_pixel: float = 1.0  # squared error in pixels over the true image's variance
    loss_perceptual: float = 1.0  # perceptual-network features of reconstruction vs true image
    loss_feature_matching: float = 0.1  # critic features of reconstruction vs true image
    loss_feature_consistency: float = 0.1  # feature-network features of the reconstruction vs its conditioning
    loss_ssim: float = 0.0  # 1 - eval's SSIM of the reconstruction, at image_size (on: the ssim score measures it too)
    # The perceptual loss's network; weights '' means features.weights. Never the judge (eval.judge_*).
    perceptual_network: str = "vgg19"
    perceptual_weights: str = ""  # the perceptual network's weights, as features.weights; '' = features.weights
    perceptual_layers: list[str] = field(default_factory=lambda: ["conv1_2", "conv2_2", "conv3_4"])  # its layers compared
    # Feature consistency compares these condition layers ([] = all of them) of the reconstruction.
    consistency_layers: list[str] = field(default_factory=list)
    # What the generator is trained on: 'true' features of the training images, 'corrupted'
    # (true features mixed with noise), 'oof' (stage 1's out-of-fold decoded features of the
    # training images, every subject and ROI) or 'mix' (shares mix_true/mix_corrupted/mix_oof).
    train_inputs: str = "oof"
    # Where the output starts before the blocks add to it: 'mean' (the training images' mean image) or
    # 'decoded_pixels' (the decoded pixels layer of condition_layers, brought to image_size, so the blocks
    # draw only what the decoded image lacks).
    start: str = "mean"
    mix_true: float = 0.0  # train_inputs 'mix': weight of true features (the three are normalised)
    mix_corrupted: float = 0.5  # train_inputs 'mix': weight of corrupted features
    mix_oof: float = 0.5  # train_inputs 'mix': weight of out-of-fold decoded features
    # 'corrupted': each true input is mixed with noise at a random correlation in [condition_corr_min, 1].
    condition_corr_min: float = 0.3
    ema_decay: float = 0.999  # EMA of the generator's weights (used for reconstruction); 0 = off
    bf16: bool = False  # bf16 autocast on GPU (ignored on CPU)
    tick_every: int = 100  # generator steps between status lines, grids, validation scores and checkpoints
    # A tick whose output is dead (no variance across images, or not finite) rolls training back to the
    # last healthy checkpoint with the learning rate times rollback_lr_factor; after max_rollbacks such
    # rollbacks the run stops with one line naming the cause and the fix. The image coders (latent_regression,
    # vae) follow the same two settings (their dead tick: a loss risen tenfold, or outputs that collapsed).
    max_rollbacks: int = 3  # rollbacks before the run stops (0: stop at the first dead tick)
    rollback_lr_factor: float = 0.3  # the learning rate is multiplied by this at each rollback
    seed: int = 0  # seeds the generator's (and image coders') weights and batches; compare's seeds vary it


TRAIN_INPUTS = ("true", "corrupted", "oof", "mix")
GENERATOR_STARTS = ("mean", "decoded_pixels")
VALIDATION_METRICS = ("pixcorr", "ssim", "pixcorr_ssim")


@dataclass
class EvalConfig:
    """Scoring of reconstructions.

    The judge network scores two-way identification by its features (``alexnet2`` and
    ``alexnet5`` for AlexNet conv2/conv5, as in the field); it must differ from every
    network a training loss uses.
    """

    judge_network: str = "alexnet"  # one of NETWORKS; never a network a training loss looks through
    judge_weights: str = "imagenet"  # as features.weights
    judge_layers: list[str] = field(default_factory=lambda: ["conv2", "conv5"])  # each gives an identification score
    judge_input_size: int = 224  # side in pixels the images are resized to for the judge
    # sizes the voxels-to-pixels baseline is fitted at, one chosen by cross-validation on the training
    # images (each capped at generator.image_size); [] = image_size halved up to three times (>= 4 px)
    pixel_ridge_sizes: list[int] = field(default_factory=list)
    grid_columns: int = 10  # test images shown per grid (grid.png, compare's grid, export)
    # Held-out training images (all repeats of an image on one side, drawn with the experiment's seed
    # before stage 1): never in a decoder's fit or folds, a generator batch or any method's fit; stage 1
    # decodes them like a test set (store split 'validation'), every tick scores them, and the tick chosen
    # on them by validation_metric reconstructs (a pixel metric: the judge only watches, so it stays
    # independent). 0 = no hold-out (last tick). Stage 1 reads this key too: changing it decodes again.
    validation_fraction: float = 0.1
    # Reconstructions are scored at this side in pixels; 0 = the stimuli's own size when every test
    # stimulus has one square size (so resampling neither helps nor hurts a method), else the
    # generator's image_size. Every method's output is resampled to it (area-averaged when shrunk).
    score_size: int = 0
    validation_metric: str = "pixcorr_ssim"  # 'pixcorr', 'ssim' or 'pixcorr_ssim' (their mean)
    save_reconstructions: bool = True  # every reconstruction as PNG files and one HDF5 file
    baselines: bool = True  # score pixel ridge and nearest training image beside the generator
    # also score wgan_gp_blend: the generator's and pixel ridge's images blended (whole, or their coarse parts at
    # pixel ridge's resolution), weight and way chosen on the validation hold-out and used only where they beat the
    # generator's image there beyond noise (stage2_generate/methods/blend.py); the generator's own row stays
    blend: bool = False


@dataclass
class MethodsConfig:
    """Published methods run beside the WGAN-GP generator and scored with it (stage 2; see
    ``stage2_generate/methods/``). ``run`` lists them; [] runs none (the demo)."""

    run: list[str] = field(default_factory=list)  # any of PUBLISHED
    # iterative feature inversion (Shen et al. 2019): layers whose decoded features are matched
    # ([] = features.layers), iterations of momentum gradient descent, the step size at the first and
    # last iteration (a fraction of the variable's SD per step: the generator's z-scored inputs have
    # SD 1, pixels the training images' SD), momentum, images per batch
    inversion_layers: list[str] = field(default_factory=list)  # inversion: layers matched ([] = features.layers)
    inversion_iterations: int = 200  # inversion: steps of momentum gradient descent
    inversion_lr_start: float = 0.03  # inversion: step size at the first step (a fraction of the variable's SD)
    inversion_lr_end: float = 0.0  # inversion: step size at the last step (linear in between)
    inversion_momentum: float = 0.9  # inversion: momentum
    inversion_batch: int = 25  # inversion: images optimised at once
    # end_to_end (Shen et al. 2019, Front Comput Neurosci) trains the generator's network, losses (less
    # feature consistency) and steps from voxels. latent_regression and vae train an image coder (an
    # encoder and the generator's network as decoder) on the training stimuli: latent size, steps, Adam's
    # learning rate, the VAE's KL weight; latent_regression then tunes the ridge map from voxels to the
    # autoencoder's latents through the frozen decoder (steps, Adam's learning rate).
    coder_latent: int = 128  # latent_regression and vae: the image coder's latent size
    coder_iterations: int = 3000  # latent_regression and vae: the image coder's training steps
    coder_lr: float = 0.0005  # latent_regression and vae: the image coder's Adam learning rate
    vae_beta: float = 1.0  # vae: weight of the KL term
    latent_tune_steps: int = 300  # latent_regression: steps tuning the voxels-to-latents map (0: ridge alone)
    latent_tune_lr: float = 0.00001  # latent_regression: Adam's learning rate for that tuning


# Every reconstruction method stage 2 knows: the generator and its true-feature row, the baselines (run with
# eval.baselines), the published methods methods.run chooses among. stage2_generate/methods/ registers one
# class per name (each module says what it does); tests/test_registry.py checks the two agree.
# split names the tool uses itself (store files, metrics.json sections): no test set may take one
RESERVED_SPLITS = ("train", "train_oof", "validation", "info")

GENERATOR_ROWS = ("wgan_gp", "wgan_gp_true_features")
BLENDS = ("wgan_gp_blend",)  # run with eval.blend: the generator's image blended with pixel ridge's
BASELINES = ("pixel_ridge", "nearest_train")
BASELINES_FROM_VOXELS = ("pixel_ridge",)  # the baselines whose class reads voxels (a compare grid's bottom row)
PUBLISHED = ("inversion_dgn", "inversion_pixels", "end_to_end", "latent_regression", "vae")
METHODS = (*GENERATOR_ROWS, *BLENDS, *BASELINES, *PUBLISHED)


@dataclass
class LabConfig:
    """The Kamitani lab's per-image .mat feature files (stage-1 verbs export-lab, import-lab)."""

    root: str = ""  # holds <features.network>/<layer>/<image>.mat and <network>/<layer>/<subject>/<roi>/<image>.mat
    import_kind: str = "decoded"  # what import-lab reads: 'decoded' or 'true_features'


@dataclass
class DownloadConfig:
    """Where stage 1's ``download`` verb finds the Deep Image Reconstruction files (figshare)."""

    api: str = "https://api.figshare.com/v2"  # sizes and MD5s of the collection's files
    collection: int = 7033577  # the figshare collection holding the files
    files_url: str = "https://ndownloader.figshare.com/files/{id}"  # used when the API gives no download_url
    timeout: float = 60.0  # seconds without data before a transfer counts as interrupted
    retries: int = 5  # resumed attempts per file before giving up (a rerun resumes again)


@dataclass
class Config:
    """One experiment: what data, which features, how to decode and generate."""

    experiment: str = "demo"  # the run's name: its folders <results_dir>/<experiment>/ and <work_dir>/<experiment>/
    seed: int = 0  # seeds stage 1's folds, the validation hold-out, ridge fits and scoring draws; not the networks
    device: str = "auto"  # 'auto' (cuda when present), 'cpu', 'cuda', 'cuda:1', ...
    results_dir: str = "results"  # tables, grids, reconstructions and metrics.json: <results_dir>/<experiment>/
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
