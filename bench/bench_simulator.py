"""Calibration check of the simulator: how hard is pixel regression for each setting?

For each (luminance_share, colour_share) setting, writes a simulated experiment of the
demo's size into a temporary folder, then fits the pixel-ridge baseline (voxels -> pixels)
exactly as stage 2 does (the validation hold-out left out of the fit, its size chosen by
cross-validation on the training images and its contrast on the hold-out) and prints its
pairwise identification and PixCorr on the natural test images, the size and contrast gain
chosen, and the median single-trial reliability of VC voxels. With the demo's config the
first row equals the demo's ``pixel_ridge`` (VC). ``make bench-simulator`` writes the table
to ``results/reference/bench/simulator.txt``.

A code that is linear in luminance and colour makes pixel regression near perfect; a code
of contrast energy alone makes it much harder. The defaults sit between. The generator is
never involved: the simulator is not tuned against it.

    python bench/bench_simulator.py                       # default, contrast only, and 5x shares
    python bench/bench_simulator.py --settings 0.05,0.02  # one setting
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from shared import metrics as M
from shared.config import load_config
from shared.datasets import DataSource, average_by_name, load_images, load_split, split_image_names
from shared.holdout import validation_split
from shared.simulate.experiment import simulate_experiment
from stage2_generate.methods._voxel_ridge import VoxelRidge
from stage2_generate.methods.pixel_ridge import pixel_ridge, selection_score


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=["0.05,0.02", "0,0", "0.25,0.1"],
                   help="luminance_share,colour_share pairs")
    p.add_argument("--config", default="configs/demo.yaml")
    args = p.parse_args()
    print(f"{'lum':>6} {'colour':>6} {'reliability':>11} {'pairwise_id_pixel':>17} {'pixcorr':>8} {'size':>5} {'gain':>6}")
    for setting in args.settings:
        lum, col = (float(v) for v in setting.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(args.config, [f"data.root={tmp}/data", f"simulation.luminance_share={lum}",
                                            f"simulation.colour_share={col}"])
            simulate_experiment(cfg)
            src = DataSource.of(cfg)
            train = load_split(src, "sub-01", "train", "VC", average=False)
            test = load_split(src, "sub-01", "natural", "VC", average=True)
            names = split_image_names(src, "train")
            # as stage 2 fits it: the validation hold-out left out of the fit, the contrast chosen there
            fit_names, val_names = validation_split(names, cfg.eval.validation_fraction, cfg.seed)
            images = load_images(cfg.data_root / cfg.data.train.images, fit_names, cfg.generator.image_size)
            fit, held = train.of_images(fit_names), train.of_images(val_names)
            held_images = load_images(cfg.data_root / cfg.data.train.images, val_names, cfg.generator.image_size)
            metric = cfg.eval.validation_metric
            score = (lambda rec: selection_score(rec, held_images, metric)) if val_names else None
            recon, record = pixel_ridge(VoxelRidge(cfg.decoder, cfg.seed, fit, fit_names, "cpu"), images,
                                        {"natural": test.X}, cfg.eval.pixel_ridge_sizes, metric,
                                        (average_by_name(held.X, held.names, val_names), score) if val_names else None)
            true = load_images(cfg.data_root / cfg.data.test["natural"].images, test.names, cfg.generator.image_size)
            corr = M.corr_matrix(recon["natural"], true)
            rel = np.nanmedian(M.single_trial_reliability(train.X, train.names))
            print(f"{lum:6.2f} {col:6.2f} {rel:11.3f} {M.pairwise_identification(None, None, corr=corr).mean():17.3f} "
                  f"{np.diag(corr).mean():8.3f} {record['size']:5d} {record['gain']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
