"""Image coders trained on the training stimuli only, for the latent-space methods.

* ``autoencoder`` (for ``latent_regression``): an encoder to a latent vector and a decoder back,
  trained with the generator's pixel and perceptual losses (Seeliger et al. 2018 trained a
  DCGAN; an autoencoder gives the latent targets a ridge map needs, as in Güçlütürk et al. 2017);
* a variational autoencoder (for ``vae``, Han et al. 2019; its kind is the method's name), trained on the evidence lower
  bound: squared pixel error summed over the image plus ``methods.vae_beta`` times the KL
  divergence of the latent posterior from N(0, I).

``CoderMethod`` (the base of both methods) trains a coder once per run and shares it.

The networks and losses are in ``_coder_nets.py``: the decoder is this project's generator network with one
vector input (its output starts at the training images' mean image and is clamped to [0, 1] only in evaluation
mode, so training and the latent map's tuning always have a pixel gradient); the encoder mirrors the critic.
Both work at any ``generator.image_size`` (the generator's and the critic's block sides). This file trains them.
Training is resumable like the generator's: a checkpoint every
``generator.tick_every`` steps under ``<work>/coders/<kind>/<key>/``, a finished coder is
reused by later runs with the same settings (the key hashes them and the images). It is guarded like
the generator's too: a tick whose loss is not finite or has risen over ``watch.DIVERGED`` times its lowest, or
whose raw autoencodings (a fixed training batch; the held-out images) spread out across images and then
collapsed (``watch.Health``, patient: a coder still on the mean image is not dead, some sit there for hundreds of
steps and then train well), rolls back to the last healthy checkpoint with ``methods.coder_lr`` times
``generator.rollback_lr_factor``, and after ``generator.max_rollbacks`` rollbacks the run stops with an
error rather than go on from a diverged or collapsed coder (the record of the kept tick lists the rollbacks).

Which tick's coder the method uses: with a validation hold-out, every tick autoencodes the held-out
images (encoder means, then decoder) and scores them by ``eval.validation_metric`` (the method's
hold-out scorer, ``TrainData.held_scorer``); ``watch.TickChooser`` chooses the tick, as for every
trained method (the highest tick's weights kept as ``best.pt``). Not the whole method's score: that
needs the ridge map from the voxels, fitted per subject and ROI after the coder, which all of them
share; the coder is chosen as what it is, a coder of unseen images. ``latent_regression``'s tuned
map, fitted per subject and ROI, is chosen by the whole method (``latent_regression.tune_latent_map``'s ``on_tick``).
Without a hold-out the last tick is kept.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from shared import checkpoints
from shared.config import Config, perceptual_weights
from shared.errors import UserError
from shared.locks import held_for_fit
from shared.runs import sweep_temporary_files
from stage2_generate.methods._coder_nets import (AUTOENCODER, ImageCoder, coder_losses, is_variational,
                                                  perceptual_losses, raw_autoencode)
from stage2_generate.methods.base import Context, Method, TrainData
from stage2_generate.watch import DEAD_SPREAD, Health, TickChooser, coder_dead_reason, image_spread, rollback

log = logging.getLogger(__name__)

CHOSEN_BY = ("autoencoding of the held-out images (encoder means, then decoder), scored by eval.validation_metric: "
             "the whole method needs the ridge map from the voxels, fitted after the coder per subject and ROI")


def coder_key(cfg: Config, kind: str, channels: int, images: np.ndarray, held: bool = False) -> str:
    """Hash of everything that determines a trained coder (resume and reuse only on a match); ``held``: its
    tick is chosen on the validation hold-out (scored by ``eval.validation_metric`` at ``eval.score_size``)."""
    m, g, e = cfg.methods, cfg.generator, cfg.eval
    # "decoder" names the decoder's output (mean image + skips, no sigmoid): coders of the older
    # sigmoid decoder, whose state dicts do not fit, are never resumed or reused
    blob = json.dumps({"kind": kind, "decoder": "mean+skips", "channels": channels, "seed": cfg.seed,
                       "latent": m.coder_latent, "lr": m.coder_lr, "beta": m.vae_beta if is_variational(kind) else None,
                       "generator": [g.image_size, g.base_channels, g.batch_size, g.seed],
                       "losses": [g.loss_pixel, g.loss_perceptual, g.perceptual_network, g.perceptual_layers,
                                  perceptual_weights(cfg)] if kind == AUTOENCODER else None,
                       "features": [cfg.features.network, cfg.features.input_size],
                       # the guard (watch.coder_dead_reason): a dead tick rolls back with a cut learning rate; as in
                       # the generator's key, its settings are left out, so that a stopped training resumes with more
                       # rollbacks (what its error suggests)
                       "guard": "rollback-1",
                       "images": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
                       # the tick that is kept (watch.TickChooser, version 1); a last-step coder is never taken for it
                       "tick": ["chosen-1", e.validation_fraction, e.validation_metric, e.score_size] if held
                       else "last"},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def coder_folder(cfg: Config, kind: str, channels: int, images: np.ndarray, held: bool = False) -> tuple[Path, str]:
    key = coder_key(cfg, kind, channels, images, held)
    return cfg.work_path / "coders" / kind / key, key


def check_coder(cfg: Config, kind: str, channels: int, images: np.ndarray, device="cpu", held: bool = False
                ) -> tuple[dict | None, Path]:
    """The coder's latest training checkpoint (``(None, path)`` when there is none), refused, before
    anything is written, when it is further than ``methods.coder_iterations``."""
    folder, _ = coder_folder(cfg, kind, channels, images, held)
    state, path = checkpoints.load_latest(folder / "checkpoint.pt", device)
    if state is not None and state.get("step", 0) > cfg.methods.coder_iterations:
        raise UserError(f"{path} holds {state['step']} {kind} steps, more than methods.coder_iterations="
                        f"{cfg.methods.coder_iterations}; raise methods.coder_iterations or delete {folder} to "
                        f"train afresh")
    return state, path


def train_coder(cfg: Config, kind: str, images: np.ndarray, channels: int, device,
                held: tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None = None) -> ImageCoder:
    """Train (or resume, or load) a coder of ``images`` ``(n, 3, S, S)``; returns it in eval mode, with the
    record of its tick choice as ``.tick``. ``held``: the validation hold-out's images ``(n_held, 3, S, S)``
    and the scorer of their reconstructions (per-image values of ``eval.validation_metric``): every tick
    autoencodes them and ``watch.TickChooser`` chooses the tick kept; None: the last tick."""
    m, g = cfg.methods, cfg.generator
    folder, key = coder_folder(cfg, kind, channels, images, held is not None)
    held_for_fit(folder, f"the {kind} coder {key} ({folder})")  # one writer, until the run ends (stage 2: held)
    sweep_temporary_files(folder)
    final_path, ckpt_path, best_path = folder / "coder.pt", folder / "checkpoint.pt", folder / "best.pt"
    with torch.random.fork_rng(devices=[]):  # seeded weights, the global generator left as it was
        torch.manual_seed(g.seed)
        coder = ImageCoder(g.image_size, g.base_channels, m.coder_latent, channels, is_variational(kind),
                           mean_image=images.mean(axis=0)).to(device)
    if final_path.is_file():
        try:
            state = checkpoints.load(final_path, device)
            if state.get("key") == key and state.get("step") == m.coder_iterations:
                coder.load_state_dict(state["coder"])
                coder.tick = state.get("tick")
                log.info("%s already trained for %d steps (%s); reusing its step-%s coder", kind, m.coder_iterations,
                         final_path, (coder.tick or {}).get("step", m.coder_iterations))
                return coder.eval().requires_grad_(False)
        except checkpoints.CorruptCheckpoint as exc:
            log.warning("%s; rebuilding it from the training checkpoints", exc)
    folder.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(coder.parameters(), lr=m.coder_lr, betas=(0.5, 0.999))
    initial = copy.deepcopy(coder.state_dict())  # where a rollback with no healthy tick behind it starts again
    gen = torch.Generator()
    gen.manual_seed(g.seed)
    ticks = TickChooser(cfg.eval.validation_metric if held is not None else None)
    health = Health(image_spread(images), patient=True)
    # what survives a rollback or a resume: the learning-rate cut, every rollback, the lowest tick loss so far
    track: dict = {"lr_scale": 1.0, "rollbacks": [], "lowest_loss": None}

    def restore(verb: str) -> int:
        """Load the newest training checkpoint of this key (else the initial state); returns its step."""
        state, path = check_coder(cfg, kind, channels, images, device, held is not None)
        if state is None or state.get("key") != key:
            coder.load_state_dict(initial)
            opt.state.clear()
            gen.manual_seed(g.seed)
            ticks.load(None)
            health.reset()
            if verb != "resuming":
                log.info("%s %s training from the untrained coder (no healthy tick behind it)", verb, kind)
            return 0
        coder.load_state_dict(state["coder"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["rng"].cpu())
        ticks.load(state.get("ticks"))
        guard = state.get("guard", {})
        if verb == "resuming":  # a rollback keeps its own learning-rate cut and rollbacks
            track.update({k: v for k, v in guard.items() if k in track})
        health.last, health.best = dict(guard.get("last", {})), dict(guard.get("best", {}))  # that tick's spreads
        log.info("%s %s training at step %d from %s", verb, kind, state["step"], path)
        return state["step"]

    def set_lr() -> None:
        for group in opt.param_groups:
            group["lr"] = m.coder_lr * track["lr_scale"]

    step = restore("resuming")
    set_lr()
    percep = perceptual_losses(cfg, device) if kind == AUTOENCODER else None
    Y = torch.from_numpy(images).to(device)
    fixed = images[:min(10, len(images))]  # the training images whose autoencoding every tick looks at
    if track["lowest_loss"] is None:  # the untrained coder's (the mean image's): the first tick is held to it too
        with torch.no_grad():
            track["lowest_loss"] = float(sum(coder_losses(cfg, kind, coder, percep, Y[:len(fixed)], None).values()))
    acc: dict[str, float] = {}
    last_tick = step
    bar = tqdm(desc=f"train {kind}", unit="step", initial=step, total=m.coder_iterations)
    while step < m.coder_iterations:
        coder.train()
        losses = coder_losses(cfg, kind, coder, percep, Y[torch.randint(0, len(Y), (g.batch_size,), generator=gen)
                                                        .to(device)], gen)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        step += 1
        bar.update(1)
        if step % g.tick_every and step != m.coder_iterations:
            continue
        means = {k: v / (step - last_tick) for k, v in acc.items()}
        line = " ".join(f"{k}={v:.4g}" for k, v in means.items())
        acc, last_tick = {}, step
        # the guard (watch.coder_dead_reason): the raw autoencodings (before the clamp) of a fixed training batch
        # and of the held-out images (no random draw: training goes on as without)
        raw = {"the training batch autoencoded": raw_autoencode(coder, fixed, device)}
        if held is not None:
            raw["the held-out images autoencoded"] = raw_autoencode(coder, held[0], device)
        loss = sum(means.values())
        dead = coder_dead_reason(loss, track["lowest_loss"], health, raw)
        if dead is not None:
            try:
                event = rollback(dead, step, track, m.coder_lr, g.rollback_lr_factor, g.max_rollbacks,
                                 f"{kind} coder", "methods.coder_lr", "the run's log (its tick lines)")
            except UserError:
                bar.close()  # the error line comes last
                raise
            log.warning("%s coder: dead output at step %d (%s); rolling back to the last healthy checkpoint (or the "
                        "untrained coder) with the learning rate cut to %.2g (rollback %d of at most %d)", kind, step,
                        dead, event["lr"], len(track["rollbacks"]), g.max_rollbacks)
            step = last_tick = restore("rolling back")
            set_lr()
            bar.reset(total=m.coder_iterations)
            bar.update(step)
            continue
        track["lowest_loss"] = loss if track["lowest_loss"] is None else min(loss, track["lowest_loss"])
        if held is not None:  # the held-out images' reconstructions: the raw ones clamped, as evaluation gives
            values = held[1](np.clip(raw["the held-out images autoencoded"], 0, 1))
            if ticks.add(step, values):  # the highest so far: its weights are kept
                checkpoints.save({"key": key, "step": step, "coder": coder.state_dict()}, best_path,
                                 keep_previous=False, fault_point="best.write")
            line += f" val_{ticks.metric}={np.nanmean(values):.4g}"
        log.info("%s step %d/%d %s", kind, step, m.coder_iterations, line)
        checkpoints.save({"key": key, "step": step, "coder": coder.state_dict(), "opt": opt.state_dict(),
                          "rng": gen.get_state(), "ticks": ticks.state(),
                          "guard": {**track, "last": health.last, "best": health.best}}, ckpt_path)
    bar.close()
    choice = ticks.choice(last_step=m.coder_iterations)
    if choice.step != m.coder_iterations:  # an earlier tick won beyond noise
        best = checkpoints.load(best_path, device) if best_path.is_file() else None
        if best is not None and best.get("key") == key and best.get("step") == choice.step:
            coder.load_state_dict(best["coder"])
        else:  # best.pt was written by a tick a resume has undone: only the last tick's weights are sure
            log.warning("%s: %s does not hold the step-%d coder; the last tick is kept", kind, best_path, choice.step)
            ticks.drop_highest()
            choice = ticks.choice(last_step=m.coder_iterations)
    coder.tick = {**choice.record(), "chosen_by": CHOSEN_BY if held is not None else None,
                  "rollbacks": track["rollbacks"]}
    # a coder still on the mean image is not rolled back (patient), but it must not pass for a trained one
    spread = image_spread(raw_autoencode(coder, held[0] if held is not None else fixed, device))
    if spread < DEAD_SPREAD * health.reference:
        coder.tick["dead"] = (f"its autoencodings of the {'held-out' if held is not None else 'training'} images vary "
                              f"across images by {spread / max(health.reference, 1e-12):.1%} of the training images' "
                              f"spread (under {DEAD_SPREAD:.0%}): it never left the mean image in "
                              f"{m.coder_iterations} steps; raise methods.coder_iterations or methods.coder_lr")
        log.warning("%s coder: %s", kind, coder.tick["dead"])
    if held is not None:
        log.log(logging.WARNING if choice.holdout_too_small else logging.INFO, "%s: the step-%d coder is kept: %s",
                kind, choice.step, choice.reason())
    checkpoints.save({"key": key, "step": m.coder_iterations, "coder": coder.state_dict(), "tick": coder.tick},
                     final_path, keep_previous=False)
    return coder.eval().requires_grad_(False)


CODER_SETTINGS = ("coder_latent", "coder_iterations", "coder_lr", "vae_beta", "latent_tune_steps", "latent_tune_lr")


class CoderMethod(Method):
    """A method through an image coder of the training stimuli, trained once per run (and reused by later
    runs with the same settings); ``kind``: the coder's (``autoencoder``, or the method's own name for a VAE)."""

    reads = "voxels"
    version = 2  # 2: the coders' guard (a dead tick rolls back)

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        # "<subject>/<roi>" -> the latent map's loss per tick (latent_regression's; one dict for every coder
        # method of the run, so that metrics.json's reconstruction_info.methods has one latent_tuning_loss)
        self.tuning: dict[str, list[float]] = ctx.shared("latent tuning", dict)

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def held_out(self) -> bool:
        """Whether the run's coder chooses its tick on the validation hold-out (``Context.held_images``): its key,
        hence its folder, depends on it; ``lock_folders``, ``check`` and the training all ask here."""
        return self.ctx.held_images is not None

    @property
    def coder(self) -> ImageCoder:
        """The run's coder (trained by the first ``fitted_coder``; trained here, without a hold-out, if none was)."""
        return self._shared_coder(None)

    def fitted_coder(self, train: TrainData) -> ImageCoder:
        """The run's coder, trained once (the first call) with its tick chosen on the validation hold-out when
        there is one (``Context.held_images`` autoencoded, scored by ``train``'s hold-out scorer)."""
        self._coder = self._shared_coder(train.held_scorer() if self.held_out() else None)
        return self._coder

    def _shared_coder(self, scorer: Callable[[np.ndarray], np.ndarray] | None) -> ImageCoder:
        c = self.ctx

        def make() -> ImageCoder:
            if self.held_out() and scorer is None:  # it would train in another folder than lock_folders names
                raise RuntimeError(f"internal error: the {self.kind} coder chooses its tick on the hold-out "
                                   f"(held_images), but no hold-out scorer was given to train it with")
            return train_coder(c.experiment, self.kind, c.train_images, c.channels, c.device,
                               held=(c.held_images, scorer) if self.held_out() else None)
        return c.shared(f"coder {self.kind}", make)

    def lock_folders(self) -> dict[Path, str]:
        """The run's coder folder (its first ``fit`` trains the coder there, holding its lock)."""
        c = self.ctx
        folder, key = coder_folder(c.experiment, self.kind, c.channels, c.train_images, self.held_out())
        return {folder: f"the {self.kind} coder {key} ({folder})"}

    def check(self) -> None:
        c = self.ctx
        check_coder(c.experiment, self.kind, c.channels, c.train_images, held=self.held_out())

    def row(self) -> dict:
        """``{"coder": {"dead": why}}`` when the run's coder never left the mean image (``summary.md`` says so beside
        the scores), else nothing."""
        dead = (getattr(getattr(self, "_coder", None), "tick", None) or {}).get("dead")
        return {"coder": {"dead": dead}} if dead else {}

    def settings(self) -> dict:
        """The coder settings, the latent map's tuning losses and, per coder kind, the record of its tick choice
        (``<kind>_tick``: which tick is kept and why, ``chosen_by`` saying it was chosen by autoencoding)."""
        m = self.ctx.methods
        coder = getattr(self, "_coder", None)
        return {"coder": {k: getattr(m, k) for k in CODER_SETTINGS}, "latent_tuning_loss": self.tuning,
                f"{self.kind}_tick": getattr(coder, "tick", None)}
