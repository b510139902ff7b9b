"""The rules ``plan`` writes a config by: from a dataset's fingerprint and the device to the settings.

Each rule is one function of the fingerprint (``shared.fingerprint``) and says, in its docstring and in the
comment it writes beside its keys, the measurement behind it. ``tests/test_plan.py`` checks that the rules
give each simulated preset's shipped settings from that preset's own data, so a rule changed here shows up
as a preset that no longer plans to itself.

A rule returns ``(values, comment)``: ``values`` maps dotted config keys to their values.
"""

from __future__ import annotations

from shared.fingerprint import Fingerprint

# the CPU budget of the demo and both presets (configs/demo.yaml): about 7 minutes of generator training on
# 2 CPU cores; lr chosen on the validation hold-out of all three among 1e-3 and 3e-4 (configs/ablations/
# settings.yaml, docs/small_datasets.md), the rest measured in docs/benchmarks_and_tests.md
CPU_BUDGET = {"generator.base_channels": 32, "generator.batch_size": 16, "generator.iterations": 600,
              "generator.n_critic": 2, "generator.lr": 0.0003, "generator.perceptual_layers": ["conv1_2", "conv2_2"],
              "generator.consistency_layers": ["conv2_2"], "generator.tick_every": 50}
CPU_BUDGET_S = 7 * 60  # what CPU_BUDGET claims: about 7 minutes of generator training on 2 CPU cores (make bench-plan)
# the real DIR set's GPU settings (configs/dir_real.yaml: 1,200 photographs at 128 px): the schema's defaults for
# the rest of the generator (batch 32, 5 critic steps, lr 1e-4, its perceptual and consistency layers) and 5 folds
GPU_BUDGET = {"generator.base_channels": 64, "generator.iterations": 20000, "generator.tick_every": 500}
GPU_FOLDS = 5
SMALL_LAYERS = ["conv2_2", "conv3_4", "conv4_4", "conv5_4", "fc6", "fc7", "fc8"]
SMALL_CONDITION = ["conv2_2", "conv3_4", "conv5_4", "fc7"]
IMAGENET_LAYERS = ["conv3_4", "conv4_4", "conv5_4", "fc6", "fc7", "fc8"]
IMAGENET_CONDITION = ["conv3_4", "conv5_4", "fc7"]
MANY_IMAGES = 500  # from here on a set counts as large (the DIR set and the demo have 1,200 training images)
CPU_SIDE = 64  # the largest image side the CPU budget was measured at (the demo's)
MIN_FOLD_IMAGES = 9  # images per cross-validation fold, at least (binary_shapes: 36 images, 4 folds)
MAX_FOLDS = 5


def rois(fp: Fingerprint, available: list[str] | None) -> tuple[dict, str]:
    """A large set (the demo: 1,200 images) whose file has VC, LVC and HVC gets all three (the study's comparison
    of early and higher visual cortex); a small one VC alone, as the small presets (each ROI is one more generator
    to train within the CPU budget). A matrix file has one set of voxels, named as ``data.rois`` says."""
    if available is None:
        return {}, f"data.rois: {fp.rois} (a matrix file's one set of voxels)"
    if fp.train.images >= MANY_IMAGES and {"VC", "LVC", "HVC"} <= set(available):
        return {"data.rois": ["VC", "LVC", "HVC"]}, "data.rois: VC, LVC and HVC (a large set; one generator each)"
    pick = ["VC"] if "VC" in available else available[:1]
    return {"data.rois": pick}, (f"data.rois: {pick[0]} alone (of {', '.join(available)}: " +
                                 ("a small set" if fp.train.images < MANY_IMAGES else "no LVC / HVC") + ")")


def image_size(fp: Fingerprint, gpu: bool) -> tuple[dict, str]:
    """The generator draws at the stimuli's own side (docs/small_datasets.md: native-resolution scores),
    at most 64 px on a CPU (the demo's measured budget) and 128 px on a GPU (configs/dir_real.yaml);
    stimuli of mixed sizes get 64 px, or 128 px on a GPU."""
    cap = 128 if gpu else CPU_SIDE
    side = max(8, min(fp.native_size, cap)) if fp.native_size else cap  # the generator draws at least 8 px
    why = (f"the stimuli's own side ({fp.native_size} px)" if fp.native_size == side
           else f"{side} px: the most the {'GPU' if gpu else 'CPU'} budget was measured at")
    return {"generator.image_size": side}, f"generator.image_size: {why}"


def features(fp: Fingerprint, imagenet: bool) -> tuple[dict, str]:
    """ImageNet weights look at 224 px, as they were trained (configs/dir_real.yaml's layers, without conv2_2,
    whose 112 x 112 maps are too large to decode); untrained weights, when no ImageNet file is present, at 64 px
    (VGG19 needs more than 28 px through its five poolings: the presets upsample 28 px stimuli to 64)."""
    if imagenet:
        return ({"features.weights": "imagenet", "features.input_size": 224, "features.layers": IMAGENET_LAYERS,
                 "generator.condition_layers": IMAGENET_CONDITION, "eval.judge_weights": "imagenet"},
                "features: ImageNet weights found in torch's cache, read at their training size, 224 px")
    return ({"features.weights": "random:0", "features.input_size": 64, "features.batch_size": 32,
             "features.layers": SMALL_LAYERS,
             "generator.condition_layers": SMALL_CONDITION, "eval.judge_weights": "random:1"},
            "features: NO ImageNet weights in torch's cache, so untrained ones (random:0; the judge random:1): "
            "every output is labelled so; put vgg19's and alexnet's files there (docs/real_data.md) and plan again")


def _large_gpu(fp: Fingerprint, gpu: bool) -> bool:
    return gpu and fp.train.images >= MANY_IMAGES and (fp.native_size or 128) >= 128


def decoder(fp: Fingerprint, gpu: bool = False) -> tuple[dict, str]:
    """Penalties: under 500 training images the grid starts at 10 (small_strokes' 100 single trials chose the
    lowest penalty on every layer: results/reference/small_strokes/decoding.csv); else at 100, as the demo and
    the DIR set. Folds: 3 with many images (the demo's CPU time), else as many as keep at least 9 images in each
    held-out fold, at most 5 (small_strokes: 100 images, 5; binary_shapes: 36, 4); a GPU with a large set of large
    images 5, as configs/dir_real.yaml."""
    n = fp.train.images
    alphas = [100.0, 1000.0, 10000.0, 100000.0] if n >= MANY_IMAGES else [10.0, 100.0, 1000.0, 10000.0, 100000.0]
    folds = (GPU_FOLDS if _large_gpu(fp, gpu) else 3) if n >= MANY_IMAGES else \
        max(2, min(MAX_FOLDS, n // MIN_FOLD_IMAGES, n))
    return ({"decoder.alphas": alphas, "decoder.cv_folds": folds},
            f"decoder: {n} training images: penalties from {alphas[0]:g}, {folds} folds of about {n // folds} images")


def budget(fp: Fingerprint, gpu: bool) -> tuple[dict, str]:
    """The CPU budget (configs/demo.yaml, measured on 2 cores) everywhere, but for a large set of large images on a
    GPU, which gets the DIR set's GPU settings (configs/dir_real.yaml; never measured here: no GPU was lent)."""
    if _large_gpu(fp, gpu):
        return dict(GPU_BUDGET), "generator: the DIR set's GPU settings (configs/dir_real.yaml; not measured on a GPU)"
    return dict(CPU_BUDGET), (f"generator: the CPU budget of the demo and presets (about {CPU_BUDGET_S // 60} min of "
                              "training on 2 CPU cores at 64 px; configs/demo.yaml)"
                              + ("; a GPU runs it faster" if gpu else ""))


def holdout(fp: Fingerprint) -> tuple[dict, str]:
    """The default hold-out (a tenth of the training images) everywhere: below 8 held-out images the last tick
    reconstructs by rule (shared/holdout.py), so a small set loses little to it. The blend of the generator's and
    pixel ridge's images (``wgan_gp_blend``) is scored too, its weight chosen on that hold-out (docs/lowlevel.md)."""
    held = round(fp.train.images * 0.1)
    note = "" if held >= 8 else "; fewer than 8 images, so the last tick reconstructs"
    return {"eval.blend": True}, (f"eval.validation_fraction: the default 0.1 ({held} held-out training images{note}); "
                                  "eval.blend: the generator's and pixel ridge's images blended, weighted on it")


def plan(fp: Fingerprint, gpu: bool, imagenet: bool, available_rois: list[str] | None = None) -> tuple[dict, list[str]]:
    """Every rule's values and comments, in the order they are written (``available_rois``: a BData file's ROIs)."""
    values: dict = {}
    comments: list[str] = []
    for vals, why in (rois(fp, available_rois), features(fp, imagenet), image_size(fp, gpu), decoder(fp, gpu),
                      budget(fp, gpu), holdout(fp)):
        values.update(vals)
        comments.append(why)
    if fp.test_in_train:
        comments.append("WARNING: " + "; ".join(f"{len(v)} of the '{k}' test images are also training images"
                                                for k, v in fp.test_in_train.items())
                        + ": nearest_train reconstructs them by construction (docs/small_datasets.md)")
    return values, comments
