"""The decimals and percentages README.md, docs/*.md and the comparisons' READMEs may write by hand: settings,
versions, tolerances and arithmetic on settings, never results. Each entry is a phrase of its document holding the
number, so the number is pinned in its context (the same digits elsewhere are not covered; a changed digit no
longer matches), with what it is. Results go through markers (``tools/make_docs.py``)."""

from __future__ import annotations

_CHANCE = "chance of two-way identification"
_LEVEL = "the intervals' confidence level"
ALLOWED: dict[str, dict[str, str]] = {
    "README.md": {
        "Python 3.11": "the Python version the Makefile's environment uses",
        "declares `<3.12`": "bdpy's declared upper bound on Python",
        "make PYTHON=python3.11 setup": "the Makefile's PYTHON variable naming the interpreter of the tested version",
        "admits `>=3.10,<3.12`": "setup.cfg's python_requires",
        "features (chance 0.5), `nway50_*`": _CHANCE,
        "(chance 0.02), `nway10_id_pixel`": "chance of top-1 among the demo's 50 test images (1/50)",
        "by pixels (chance 0.1)": "chance of ten-way identification",
        "pixel ridge [its 95% bootstrap": "the interval's confidence level",
    },
    "benchmarks_and_tests.md": {
        "(2.9 GB\nat 11,000 voxels and 5 folds)": "(1 + 5) x (11,000 + 1)^2 x 4 bytes: arithmetic on the benchmark's sizes",
        "a 3.2-million-unit layer": "conv1_2's 64 x 224 x 224 units",
        "PNG within 0.005": "the PNG round-trip tolerance tests/test_stage2.py checks",
        "below 0.8 × an untrained": "the VAE bound's threshold tests/test_methods.py checks",
    },
    "compare.md": {
        "a **95% interval that includes": "the interval's confidence level",
        "baseline reads ±0.000)": "the seed SD of a method with no training seed (zero by construction)",
        "--cell 0.8": "an export command's --cell value",
        "(with 3 seeds: beyond 2.48 seed SDs": "t(0.975, 2) / sqrt(3) = 4.303 / 1.732: the verdict rule's arithmetic",
    },
    "how_it_works.md": {
        "random correlation in [0.3, 1]": "generator.condition_corr_min's default",
        "default 0.1 of the training images": "eval.validation_fraction's default",
    },
    "outputs.md": {
        "its own; chance 0.5)": _CHANCE,
        "two-way, chance 0.5)": _CHANCE,
        "σ 1.5": "SSIM's Gaussian window SD (shared/metrics.py)",
        "PNG files within 0.005": "the PNG round-trip tolerance tests/test_stage2.py checks",
    },
    "real_data.md": {
        "MATLAB v7.3, written": "MATLAB's file-format version",
        "1250 images × 1.31 M units": "configs/dir_real.yaml's layers at 224 px: 1,313,768 units",
        "(6.6 GB, float32)": "1250 x 1,313,768 x 4 bytes",
        "50 test rows (6.6 GB)": "the same size per subject and ROI",
        "conv1_2, 3.2 M units": "64 x 224 x 224",
        "whole 3.2-million-unit layer": "64 x 224 x 224",
        "(v5 or v7.3)": "MATLAB's file-format versions",
        "v7.3 (HDF5)": "MATLAB's file-format version",
    },
    "simulator.md": {
        "offset, 0.3° SD": "the simulator's fixation jitter SD in degrees",
        "gain (15 % SD)": "the simulator's trial gain SD",
        "`simulation.reliability_median` = 0.22": "its default",
        "carry 5 % and 2 %": "simulation.luminance_share and colour_share's defaults (0.05, 0.02)",
        "between 0.05 and 0.30": "the bounds on the default reliability tests/test_simulator.py checks",
    },
    "lowlevel.md": {"with a weight `a` (0 to 1 by 0.1)": "stage2_generate/methods/blend.py's WEIGHTS",
                    "`a` = 0.3 is 70 %": "an example of what a weight means"},
    "small_datasets.md": {
        "`generator.rollback_lr_factor` (0.3)": "its default",
        "`eval.validation_fraction` (0.1)": "its default",
        "under 2 % of the training images' spread": "watch.DEAD_SPREAD (0.02)",
        "whose lower 5 % quantile": "watch.NOISE_QUANTILE (0.05)",
        "false \"win\" comes up 10-28 % of the time": "watch.py's measured false-win rates at 2-6 held-out images",
        "images (10 % of": "eval.validation_fraction's default (0.1)",
    },
    "compare/blend_binary_shapes/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/blend_demo/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/blend_small_strokes/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/decoders/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/inputs/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/layers/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/lowlevel_binary_shapes/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/lowlevel_demo/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/lowlevel_small_strokes/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/methods/README.md": {"their 95% intervals (seeds": _LEVEL,
                                  "momentum (0.9": "the inversion's momentum, methods.inversion_momentum's default"},
    "compare/rois/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/settings_binary_shapes/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/settings_demo/README.md": {"their 95% intervals (seeds": _LEVEL},
    "compare/settings_small_strokes/README.md": {"their 95% intervals (seeds": _LEVEL},
}
