"""``latent_regression`` (Seeliger et al. 2018; Güçlütürk et al. 2017): ridge from the voxels to the
latent codes of an autoencoder of the training stimuli, then the linear map tuned through the
autoencoder's frozen decoder with its pixel and perceptual losses (``methods.latent_tune_steps``);
test voxels are decoded through the map and the decoder. The coder is in ``_image_coder.py``.

Both trained parts reconstruct from a tick chosen on the validation hold-out by ``watch.TickChooser``
(the rule of every trained method): the autoencoder's by autoencoding the held-out images (see
``_image_coder``; ``settings()``: ``autoencoder_tick``), the tuned map's by the whole method (the held-out
images' trial-averaged voxels through the map and the decoder; step 0 is the ridge map before tuning;
``row()``: ``tuning``). Without a hold-out, the last tick of each."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from shared.config import Config
from stage2_generate.methods import _coder_nets as coders
from stage2_generate.methods._coder_nets import ImageCoder
from stage2_generate.methods._image_coder import CoderMethod
from stage2_generate.methods.base import TestData, TrainData
from stage2_generate.watch import TickChooser

log = logging.getLogger(__name__)


def tune_latent_map(cfg: Config, coder: ImageCoder, W: np.ndarray, b: np.ndarray, Xz: np.ndarray,
                    trial_img: np.ndarray, images: np.ndarray, device,
                    on_tick: Callable[[int, np.ndarray, np.ndarray], None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Tune the linear map ``z = Xz @ W + b`` from z-scored training trials to latent codes with the
    autoencoder's losses (pixel, perceptual) through its frozen decoder: ``methods.latent_tune_steps``
    Adam steps of ``generator.batch_size`` trials (Seeliger et al. 2018 train the map this way). The
    decoder renders unclamped during tuning (training mode, as it was trained), so a pixel pushed outside
    [0, 1] still has a gradient back; the loss reported per tick is of the clamped decoding (what
    ``decode`` gives). Returns the tuned ``(W, b)`` and the loss per tick (the first before any step).
    ``on_tick(step, W, b)`` is called with the map of every tick (step 0: the map given), e.g. to score it on
    the validation hold-out and keep the tick ``watch.TickChooser`` chooses."""
    m, g = cfg.methods, cfg.generator
    if m.latent_tune_steps == 0:
        return W, b, []
    Wt = torch.tensor(W, device=device, requires_grad=True)
    bt = torch.tensor(b, device=device, requires_grad=True)
    coder.requires_grad_(False)
    percep = coders.perceptual_losses(cfg, device)
    X = torch.from_numpy(np.ascontiguousarray(Xz)).to(device)
    Y = torch.from_numpy(images).to(device)
    idx_img = torch.from_numpy(trial_img).to(device)
    opt = torch.optim.Adam([Wt, bt], lr=m.latent_tune_lr)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)

    def loss_of(rows, clamped: bool):
        coder.decoder.train(not clamped)  # the generator clamps its output in evaluation mode only
        return sum(coders.autoencoder_loss(cfg, percep, coder.decode(X[rows] @ Wt + bt), Y[idx_img[rows]]).values())

    was_training = coder.decoder.training
    history = []
    probe = torch.randperm(len(X), generator=gen)[: min(256, len(X))].to(device)  # a fixed sample to report on
    try:
        for step in tqdm(range(m.latent_tune_steps + 1), desc="tune latent map", unit="step"):
            if step % g.tick_every == 0 or step == m.latent_tune_steps:
                with torch.no_grad():
                    history.append(float(loss_of(probe, clamped=True)))  # what decoding will give
                if on_tick is not None:
                    on_tick(step, Wt.detach().cpu().numpy().copy(), bt.detach().cpu().numpy().copy())
            if step == m.latent_tune_steps:
                break
            loss = loss_of(torch.randint(0, len(X), (g.batch_size,), generator=gen).to(device), clamped=False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        coder.decoder.train(was_training)
    return Wt.detach().cpu().numpy(), bt.detach().cpu().numpy(), history


class LatentRegression(CoderMethod):
    kind = coders.AUTOENCODER
    describe = ("ridge from voxels to an autoencoder's latent codes, tuned through its frozen decoder (Seeliger "
                "et al. 2018)")

    def fit(self, train: TrainData) -> LatentRegression:
        c, ridge = self.ctx, train.ridge
        coder = self.fitted_coder(train)
        fit = ridge.fit(coders.encode_means(coder, c.train_images, c.device))
        W, b = fit.coef()
        scorer = train.held_scorer()
        ticks = TickChooser(c.validation_metric if scorer is not None else None)
        kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the highest tick's map
        X_held = ridge.x_std.transform(train.held.voxels).astype(np.float32) if scorer is not None else None

        def on_tick(step: int, W_: np.ndarray, b_: np.ndarray) -> None:
            if scorer is not None and ticks.add(step, scorer(coders.decode(coder, X_held @ W_ + b_, c.device))):
                kept.clear()
                kept[step] = (W_, b_)

        self.W, self.b, history = tune_latent_map(c.experiment, coder, W, b, ridge.Xz, ridge.trial_img,
                                                         c.train_images, c.device, on_tick=on_tick)
        self.tuning_tick = None
        if history:  # tuned: the map of the chosen tick
            choice = ticks.choice(last_step=c.methods.latent_tune_steps)
            if choice.step in kept and choice.step != c.methods.latent_tune_steps:
                self.W, self.b = kept[choice.step]
            self.tuning_tick = choice.record()
            if scorer is not None:
                log.info("%s %s %s: the step-%d latent map reconstructs: %s", self.name, train.subject, train.roi,
                         choice.step, choice.reason())
        self.x_std = ridge.x_std
        self.tuning[f"{train.subject}/{train.roi}"] = history
        if history:
            log.info("%s %s %s: loss through the decoder on training trials %.4g -> %.4g (ridge penalty %g)",
                     self.name, train.subject, train.roi, history[0], history[-1], fit.alpha)
        return self

    def reconstruct(self, test: TestData) -> np.ndarray:
        return coders.decode(self.coder, self.x_std.transform(test.voxels) @ self.W + self.b, self.ctx.device)

    def row(self) -> dict:
        """How the tuned map's tick was chosen for this subject and ROI (one dict: not a metric column)."""
        return {**super().row(), **({"tuning": self.tuning_tick} if self.tuning_tick is not None else {})}
