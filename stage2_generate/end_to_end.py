"""End-to-end reconstruction (Shen, Dwivedi, Majima, Horikawa, Kamitani 2019, Front Comput Neurosci):
a generator trained from voxels straight to images, with pixel, feature (comparator: the
perceptual network) and adversarial losses.

It is this project's generator and training loop (``train.train_generator``) with one vector
input, the z-scored voxels of one subject and ROI, trained on the same training trials, one
trial per sample (each image's trials are drawn with equal probability), with the same losses
and steps as the WGAN-GP generator less feature consistency (there are no decoded features
to be consistent with). Its output starts, like the WGAN-GP generator's, at the mean of the
training images it is given (``train.train_generator`` builds it), at their own size. Test
samples are the trial-averaged voxels, z-scored with the training trials' statistics, as the
paper does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from shared.config import Config
from shared.errors import UserError
from shared.datasets import SplitData, brain_file


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


def _training(cfg: Config, subject: str, roi: str, images: np.ndarray, channels: int) -> tuple[Config, str]:
    """The end-to-end generator's config (the generator's, less feature consistency) and training key."""
    import hashlib

    from stage2_generate.train import training_key

    e2e = replace(cfg, generator=replace(cfg.generator, loss_feature_consistency=0.0))
    images_hash = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
    key = training_key(e2e, channels, [brain_file(cfg, subject, "train")],
                       tag={"method": "end_to_end", "subject": subject, "roi": roi, "images": images_hash})
    return e2e, key


def preflight(cfg: Config, subject: str, roi: str, train: SplitData, train_names: list[str], images: np.ndarray,
              channels: int) -> None:
    """Check, before anything is written, that every training image has a trial and that the generator
    files a training would resume from fit (as ``train.preflight`` does for the WGAN-GP generator)."""
    from stage2_generate.train import preflight as check_generator_files

    missing = len(set(train_names) - set(train.names))
    if missing:
        raise UserError(f"{missing} training images have no trial in {brain_file(cfg, subject, 'train')}; the "
                        f"end_to_end method trains on every training image: drop it from methods.run")
    e2e, key = _training(cfg, subject, roi, images, channels)
    check_generator_files(e2e, cfg.work_path / "generator" / key, key, [(train.X.shape[1],)], channels)


def train_end_to_end(cfg: Config, subject: str, roi: str, Xz: np.ndarray, trial_img: np.ndarray, images: np.ndarray,
                     channels: int, device) -> torch.nn.Module:
    """The end-to-end generator of one subject and ROI, trained on its z-scored training trials ``Xz``
    (trained, resumed or reused from ``<work>/generator/<key>``, like the WGAN-GP generator's; checked
    by ``preflight``)."""
    from stage2_generate.train import train_generator

    e2e, key = _training(cfg, subject, roi, images, channels)
    sampler = TrialSampler.build(Xz, trial_img, len(images), device)
    return train_generator(e2e, sampler, [], images, device, cfg.work_path / "generator" / key, None, key,
                           channels=channels, label=f"end_to_end {subject} {roi}")
