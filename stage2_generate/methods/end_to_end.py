"""End-to-end reconstruction (Shen, Dwivedi, Majima, Horikawa, Kamitani 2019, Front Comput Neurosci):
a generator trained from voxels straight to images, with pixel, feature (comparator: the
perceptual network) and adversarial losses.

It is this project's generator and training loop (``stage2_generate/train.py``) with one vector
input, the z-scored voxels of one subject and ROI, trained on the same training trials, one
trial per sample (each image's trials are drawn with equal probability), with the same losses
and steps as the WGAN-GP generator less feature consistency (there are no decoded features
to be consistent with). Its output starts, like the WGAN-GP generator's, at the mean of the
training images it is given, at their own size. Test
samples are the trial-averaged voxels, z-scored with the training trials' statistics, as the
paper does.

Like the WGAN-GP generator, it reconstructs from the tick that ``watch.TickChooser`` chooses on
the validation hold-out (the held-out images' trial-averaged voxels, scored by
``eval.validation_metric`` through ``TrainData.held_scorer``; the last tick without a hold-out);
``row()`` keeps the choice's record per subject and ROI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.config import Config
from shared.datasets import DataSource, SplitData, brain_file
from shared.errors import UserError
from shared.locks import held_for_fit
from shared.runs import sweep_temporary_files
from stage2_generate.methods.base import Method, TestData, TrainData
from stage2_generate.models import generate
from stage2_generate.watch import HeldScore, Validation


@dataclass
class TrialSampler:
    """The ``ConditionSampler`` of end-to-end training: a random trial of each drawn image.

    ``trials``: z-scored voxels ``(n_trials, n_voxels)``; ``of_image``: ``(n_images, max_trials)``
    trial rows per image (padded); ``counts``: trials per image. ``true`` holds each image's mean
    trial (what the training log's sample grid shows) and fixes the input shape.
    """

    trials: torch.Tensor
    of_image: torch.Tensor
    counts: torch.Tensor
    true: list[torch.Tensor]

    @classmethod
    def build(cls, Xz: np.ndarray, trial_img: np.ndarray, n_images: int, device) -> TrialSampler:
        counts = np.bincount(trial_img, minlength=n_images)
        order = np.argsort(trial_img, kind="stable")  # trial rows grouped by image, in file order
        rank = np.arange(len(order)) - (np.cumsum(counts) - counts)[trial_img[order]]  # k-th trial of its image
        of_image = np.zeros((n_images, max(1, counts.max())), dtype=np.int64)
        of_image[trial_img[order], rank] = order
        trials = torch.from_numpy(Xz).to(device)
        img = torch.from_numpy(trial_img).to(device)
        total = torch.zeros(n_images, Xz.shape[1], device=device).index_add_(0, img, trials)
        mean = total / torch.from_numpy(counts).to(device).clamp_min(1).unsqueeze(1)
        return cls(trials, torch.from_numpy(of_image).to(device), torch.from_numpy(counts).to(device), [mean])

    def __call__(self, idx: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        idx = idx.to(self.trials.device)
        pick = (torch.rand(len(idx), generator=gen).to(self.trials.device) * self.counts[idx]).long()
        return [self.trials[self.of_image[idx, pick]]]


def _training(cfg: Config, subject: str, roi: str, images: np.ndarray, channels: int, name: str) -> str:
    """The end-to-end generator's training key: the generator's settings less feature consistency (there
    are no decoded features to be consistent with), tagged with the method, subject, ROI and images (the
    method's registry name: renaming it trains new generators)."""
    import hashlib

    from stage2_generate.generator_files import training_key

    images_hash = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
    return training_key(cfg, channels, [brain_file(DataSource.of(cfg), subject, "train")],
                        switched_off=("feature_consistency",),
                        tag={"method": name, "subject": subject, "roi": roi, "images": images_hash})


class EndToEnd(Method):
    """One generator per subject and ROI from its z-scored training trials, trained (or resumed, or reused
    from ``<work>/generator/<key>``, like the WGAN-GP generator's) in ``fit``."""

    reads = "voxels"
    describe = ("a generator trained from voxels to images (Shen et al. 2019, Front Comput Neurosci), one per "
                "subject and ROI, its tick chosen on the validation hold-out")

    def check(self) -> None:
        from shared.datasets import load_split

        c, cfg = self.ctx, self.ctx.experiment
        src = DataSource.of(cfg)
        for subject in cfg.data.subjects:
            for roi in cfg.data.rois:
                preflight(cfg, subject, roi, load_split(src, subject, "train", roi, average=False), c.train_names,
                          c.train_images, c.channels)

    def lock_folders(self) -> dict[Path, str]:
        """Every subject's and ROI's generator folder (each ``fit`` trains in one, holding its lock)."""
        c, cfg = self.ctx, self.ctx.experiment
        keys = [_training(cfg, subject, roi, c.train_images, c.channels, self.name)
                for subject in cfg.data.subjects for roi in cfg.data.rois]
        return {c.work / "generator" / key: f"the {self.name} generator {key}" for key in keys}

    def fit(self, train: TrainData) -> EndToEnd:
        from stage2_generate.generator_files import training_record
        from stage2_generate.train import train_generator

        c, ridge = self.ctx, train.ridge
        key = _training(c.experiment, train.subject, train.roi, c.train_images, c.channels, self.name)
        sampler = TrialSampler.build(ridge.Xz, ridge.trial_img, len(c.train_images), c.device)
        self.x_std = ridge.x_std
        scorer = train.held_scorer()
        validation = Validation([[self.x_std.transform(train.held.voxels).astype(np.float32)]],
                                HeldScore(scorer, c.validation_metric), c.validation_metric) \
            if scorer is not None else None
        folder = c.work / "generator" / key
        # one writer: stage 2 holds it already (``lock_folders``, taken in one order with the others; any other
        # folder is an internal error there)
        held_for_fit(folder, f"the {self.name} generator {key}")
        sweep_temporary_files(folder)
        self.G = train_generator(c.generator, c.features, sampler, [], c.train_images, c.device, folder, None, key,
                                 channels=c.channels, label=f"{self.name} {train.subject} {train.roi}",
                                 validation=validation)
        record = training_record(folder)
        self.record = {"step": record["best_step"], "score": record["best_score"],
                       **{k: record[k] for k in ("tick_rule", "holdout_too_small", "holdout_images", "tick_choice",
                                                 "rollbacks")}}
        return self

    def row(self) -> dict:
        """The tick that reconstructs this subject's and ROI's images and how it was chosen (one dict: not a
        metric column)."""
        return {"training": dict(self.record)}

    def reconstruct(self, test: TestData) -> np.ndarray:
        return generate(self.G, [self.x_std.transform(test.voxels)], self.ctx.device)


def preflight(cfg: Config, subject: str, roi: str, train: SplitData, train_names: list[str], images: np.ndarray,
              channels: int) -> None:
    """Check, before anything is written, that every training image has a trial and that the generator
    files a training would resume from fit (as ``generator_files.preflight`` does for the WGAN-GP generator)."""
    from stage2_generate.generator_files import preflight as check_generator_files

    missing = len(set(train_names) - set(train.names))
    if missing:
        path = brain_file(DataSource.of(cfg), subject, "train")
        raise UserError(f"{missing} training images have no trial in {path}; the "
                        f"{EndToEnd.name} method trains on every training image: drop it from methods.run")
    key = _training(cfg, subject, roi, images, channels, EndToEnd.name)
    check_generator_files(cfg.generator, cfg.work_path / "generator" / key, key, [(train.X.shape[1],)], channels)
