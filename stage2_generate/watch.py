"""What each training tick checks: is the output alive, and which tick reconstructs.

A generator can die without an error: its output stops varying across images (all black,
all grey, the mean image) or stops being finite, and the losses keep printing numbers. At
every tick ``Health.dead_reason`` looks at the raw outputs (unclamped: what the network draws,
before any clamp to [0, 1]) of the fixed sample batch (EMA and trained weights) and of the
held-out validation images; training rolls back on a dead tick (see ``train.train_generator``).
``Validation`` scores the held-out training images at every tick: the mean of each metric and
the per-image values of ``eval.validation_metric`` (a pixel metric).

Which tick reconstructs (``TickChooser``, the one rule of every trained method: the WGAN-GP
generator, ``end_to_end``'s generators, the image coders and ``latent_regression``'s map): the
last tick, unless the tick with the highest mean validation score beats it beyond the hold-out's
noise. "Beyond noise": a paired bootstrap over the held-out images of (that tick - last tick),
``BOOTSTRAP_DRAWS`` draws, whose lower ``NOISE_QUANTILE`` quantile lies above 0. A hold-out of
fewer than ``MIN_HOLDOUT`` images cannot tell a tick's win from noise: the last tick reconstructs
and the training record says so (``holdout_too_small``). Only the highest tick's weights need to
be kept beside the last tick's (the generator's ``best.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from shared.errors import UserError

# A tick is dead when an output is not finite, or when the outputs' spread across images is
# under DEAD_SPREAD of the training images' spread and either has collapsed (fallen under half
# of the highest spread of a healthy tick) or is stuck (not grown at all since the last tick).
# A generator starts at the mean image (spread 0) and a healthy one spreads out, however slowly
# at a small learning rate; one that collapsed (black everywhere) or never moves does not.
DEAD_SPREAD = 0.02
STUCK = 1e-6  # growth under this share of the training images' spread is no growth
# An image coder's tick is also dead when its mean training loss is over DIVERGED times its lowest so far at a
# healthy tick (a loss that rises tenfold is an Adam blow-up, not the noise of a batch; the methods compare saw
# one rise a millionfold after the coder had sat on the mean image).
DIVERGED = 10.0

# The tick choice. With n held-out images and no true difference between two ticks, the lower 5%
# bootstrap quantile of the mean paired difference lies above 0 (a false "win") far more often than
# 5% when n is small: measured on normal differences (1,500 trials of 2,000 draws), 28% at n = 2,
# 13% at n = 4, 10% at n = 6, 9% at n = 8, 7% at n = 10-20. From MIN_HOLDOUT images on, a false win
# stays under 10% (twice the nominal rate); under it the choice would be mostly noise.
MIN_HOLDOUT = 8
NOISE_QUANTILE = 0.05  # an earlier tick wins when this lower quantile of its bootstrap gain is above 0
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0  # the same draws for every choice: a rerun chooses the same tick
HELD_VALUES = "held_values"  # the per-image values of a tick's validation metric in its record


def tick_rule(metric: str | None) -> str:
    """The one sentence that states the rule (the training record's ``tick_rule``); ``metric`` None: no hold-out."""
    if metric is None:
        return "No validation hold-out: the last tick reconstructs."
    return (f"The last tick reconstructs unless the tick with the highest mean validation {metric} beats it beyond "
            f"noise (lower {NOISE_QUANTILE:.0%} quantile of {BOOTSTRAP_DRAWS} paired bootstrap means over the "
            f"held-out images of its gain over the last tick above 0); with fewer than {MIN_HOLDOUT} held-out "
            f"images the last tick.")


@dataclass
class TickChoice:
    """The tick that reconstructs (``step``, its mean validation ``score``) and why; ``record()`` is what the
    training record and the methods' rows keep."""

    step: int
    score: float | None
    metric: str | None
    holdout_images: int
    holdout_too_small: bool
    highest_step: int | None = None
    highest_score: float | None = None
    last_step: int | None = None
    last_score: float | None = None
    gain: float | None = None  # mean over held-out images of (highest tick - last tick)
    gain_low: float | None = None  # its lower NOISE_QUANTILE bootstrap quantile

    @property
    def beyond_noise(self) -> bool:
        return self.gain_low is not None and self.gain_low > 0

    def reason(self) -> str:
        """Why this tick, in words (the log line)."""
        if self.metric is None:
            return "no validation hold-out: the last tick"
        if self.holdout_too_small:
            return (f"the hold-out has {self.holdout_images} image(s), fewer than {MIN_HOLDOUT}: no tick can be told "
                    f"from another within noise, so it is the last tick")
        if self.highest_step == self.last_step:
            return "the last tick scores highest"
        verdict = "beyond noise: it" if self.beyond_noise else "within noise: the last tick"
        return (f"step {self.highest_step} scores highest ({self.highest_score:.4f}), {self.gain:+.4f} over the last "
                f"tick's {self.last_score:.4f} (lower {NOISE_QUANTILE:.0%} bootstrap quantile {self.gain_low:+.4f}), "
                f"{verdict} reconstructs")

    def record(self) -> dict:
        def r(x):
            return None if x is None else round(float(x), 5)

        return {"step": self.step, "score": r(self.score), "tick_rule": tick_rule(self.metric),
                "holdout_images": self.holdout_images, "holdout_too_small": self.holdout_too_small,
                "highest_step": self.highest_step, "highest_score": r(self.highest_score),
                "last_step": self.last_step, "last_score": r(self.last_score), "gain": r(self.gain),
                "gain_low": r(self.gain_low), "beyond_noise": self.beyond_noise}


def paired_gain(better: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """``(mean, lower NOISE_QUANTILE bootstrap quantile)`` of the mean over images of ``better - base``
    (per-image values ``(n,)``; images where either is NaN are left out)."""
    d = np.asarray(better, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(d), (BOOTSTRAP_DRAWS, len(d)))
    return float(d.mean()), float(np.quantile(d[idx].mean(axis=1), NOISE_QUANTILE))


class TickChooser:
    """The ticks of one training as far as the choice needs them: the last tick and the tick with the highest
    mean validation score (the first of equal scores), each with its per-image values. ``add`` says when a
    tick becomes the highest (its weights must then be kept); ``choice`` applies the rule; ``state`` /
    ``load`` carry it through checkpoints (plain lists: resumes and rollbacks restore it)."""

    def __init__(self, metric: str | None):
        self.metric = metric
        self.highest: tuple[int, float, list[float]] | None = None
        self.last: tuple[int, float, list[float]] | None = None

    def add(self, step: int, values, score: float | None = None) -> bool:
        """Record tick ``step`` with its per-image values ``(n,)`` (``score``: its mean, else theirs); True when
        it scores highest so far."""
        values = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))]
        score = float(np.nanmean(values)) if score is None else float(score)
        self.last = (step, score, values)
        if self.highest is None or score > self.highest[1]:
            self.highest = self.last
            return True
        return False

    def choice(self, last_step: int | None = None) -> TickChoice:
        """The tick that reconstructs; without any scored tick (no hold-out), ``last_step``."""
        if self.last is None or self.metric is None:
            return TickChoice(last_step if last_step is not None else -1, None, None, 0, False)
        (hs, hscore, hv), (ls, lscore, lv) = self.highest, self.last
        n = len(lv)
        common = dict(metric=self.metric, holdout_images=n, highest_step=hs, highest_score=hscore, last_step=ls,
                      last_score=lscore)
        if n < MIN_HOLDOUT:
            return TickChoice(ls, lscore, holdout_too_small=True, **common)
        if hs == ls:
            return TickChoice(ls, lscore, holdout_too_small=False, gain=0.0, **common)
        gain, low = paired_gain(np.array(hv), np.array(lv))
        won = bool(low > 0)
        return TickChoice(hs if won else ls, hscore if won else lscore, holdout_too_small=False, gain=gain,
                          gain_low=low, **common)

    def state(self) -> dict:
        return {"metric": self.metric, "highest": list(self.highest) if self.highest else None,
                "last": list(self.last) if self.last else None}

    def load(self, state: dict | None) -> TickChooser:
        """Take the ticks of ``state`` (from ``state()``; none when it is None or of another metric)."""
        ok = bool(state) and state.get("metric") == self.metric
        self.highest = tuple(state["highest"]) if ok and state.get("highest") else None
        self.last = tuple(state["last"]) if ok and state.get("last") else None
        return self

    def drop_highest(self) -> None:
        """Forget the highest tick (its weights are lost): the last tick is the only candidate."""
        self.highest = self.last


def image_spread(images: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across images of ``(n, C, S, S)`` images."""
    return float(images.reshape(len(images), -1).std(axis=0).mean()) if len(images) > 1 else 0.0


class Health:
    """Tells dead ticks from live ones; ``reference_spread`` is ``image_spread`` of the training images."""

    def __init__(self, reference_spread: float, patient: bool = False):
        self.reference = reference_spread
        # patient (an image coder's): near the mean image is alive until the outputs have once spread out past
        # DEAD_SPREAD; then falling back under it, to less than half of the best spread, is a collapse. A coder
        # may sit on the mean image for hundreds of steps and then train well (the methods compare saw a VAE do
        # so for half its steps), and a cut learning rate would only keep it there (``coder_dead_reason`` adds
        # divergence)
        self.patient = patient
        self.last: dict[str, float] = {}  # spread of each output at the last healthy tick (0 at the start)
        self.best: dict[str, float] = {}  # the highest spread of each output at a healthy tick

    def reset(self) -> None:
        """Forget the spreads (training starts again from the mean image)."""
        self.last, self.best = {}, {}

    def dead_reason(self, outputs: dict[str, np.ndarray]) -> str | None:
        """Why the outputs ``{what: (n, C, S, S)}`` of this tick are dead, or None (then they are remembered).
        ``outputs`` are the raw outputs, before any clamp to [0, 1]: a clamp would show an output pushed
        outside [0, 1] as flat although the network still tells the images apart (and training, unclamped,
        still has a gradient to bring it back)."""
        spreads = {}
        for what, images in outputs.items():
            if not np.isfinite(images).all():
                return f"{what} is not finite"
            spreads[what] = spread = image_spread(images)
            if len(images) < 2 or spread >= DEAD_SPREAD * self.reference:
                continue
            share = f"spread {spread:.2g}, {spread / max(self.reference, 1e-12):.1%} of the training images'"
            if self.patient:  # collapsed: it had spread out past the dead line, and has lost half of its best since
                best = self.best.get(what, 0.0)
                if best >= DEAD_SPREAD * self.reference and spread < 0.5 * best:
                    return f"{what} collapsed: it no longer varies across images ({share})"
                continue
            if spread < 0.5 * self.best.get(what, 0.0):
                return f"{what} collapsed: it no longer varies across images ({share})"
            if spread <= self.last.get(what, 0.0) + STUCK * self.reference:
                return f"{what} does not vary across images and is not spreading out ({share})"
        self.last = spreads
        self.best = {k: max(v, self.best.get(k, 0.0)) for k, v in spreads.items()}
        return None


def coder_dead_reason(loss: float, lowest: float | None, health: Health, outputs: dict[str, np.ndarray]) -> str | None:
    """Why an image coder's tick is dead, or None: its mean training ``loss`` is not finite or over ``DIVERGED``
    times the ``lowest`` so far (of its healthy ticks and the untrained coder's), or ``health`` finds its raw
    ``outputs`` dead (``Health.dead_reason``, which remembers them when they are alive)."""
    if not np.isfinite(loss):
        return "the training loss is not finite"
    if lowest is not None and loss > DIVERGED * lowest:
        return f"the training loss diverged: {loss:.3g}, over {DIVERGED:g} times its lowest so far, {lowest:.3g}"
    return health.dead_reason(outputs)


def rollback(reason: str, step: int, track: dict, lr: float, factor: float, max_rollbacks: int, label: str,
             lr_key: str, record: str = "stats.jsonl") -> dict:
    """Record a dead tick in ``track`` (``lr_scale``, ``rollbacks``) and cut the learning rate (``lr``, the
    setting ``lr_key``, times ``factor``), or stop with a ``UserError`` (pointing at ``record``, where the
    training's ticks are) when ``max_rollbacks`` are spent; returns the rollback's event."""
    if len(track["rollbacks"]) >= max_rollbacks:
        raise UserError(f"the {label}'s output died at step {step} ({reason}) after {len(track['rollbacks'])} "
                        f"rollback(s) with the learning rate cut to {lr * track['lr_scale']:.2g}; lower "
                        f"{lr_key} (e.g. {lr * track['lr_scale'] * factor:.2g}) or raise generator.max_rollbacks, "
                        f"and look at the training images and {record}")
    track["lr_scale"] *= factor
    event = {"step": step, "event": "rollback", "cause": reason, "lr": lr * track["lr_scale"]}
    track["rollbacks"].append(event)
    return event


class HeldScore:
    """A ``Validation`` scorer from per-image values of one metric alone (a method's hold-out scorer,
    ``TrainData.held_values``): ``values(recon (n, C, S, S)) -> (n,)``."""

    def __init__(self, values: Callable[[np.ndarray], np.ndarray], metric: str):
        self.values, self.metric = values, metric

    def per_image(self, recon: np.ndarray, with_judge: bool = False) -> dict[str, np.ndarray]:
        return {self.metric: np.atleast_1d(np.asarray(self.values(recon), dtype=np.float64))}


@dataclass
class Validation:
    """The held-out training images a tick scores.

    ``inputs``: per source (subject x ROI) the generator's inputs of the held-out images, per layer
    ``(n_val, *shape)``; ``score``: a ``shared.evaluation.ValidationScorer`` (or a ``HeldScore``), whose
    ``per_image(recon, judge) -> {metric: (n_val,)}`` scores reconstructions of the held-out images by pixel
    metrics, and by the judge's identification when ``judge`` is true (the first source only: the judge
    watches, it does not choose, and it is the slow part); ``metric`` (a pixel metric) chooses the tick.
    """

    inputs: list[list[np.ndarray]]
    score: Any
    metric: str

    @property
    def key(self) -> str:
        return f"val_{self.metric}"

    def __call__(self, generate: Callable[[list[np.ndarray]], np.ndarray]) -> tuple[dict, np.ndarray]:
        """``({val_<metric>: mean over sources, ..., HELD_VALUES: per-image values of the validation metric,
        mean over sources}, outputs of the first source)``. ``generate`` may give raw (unclamped) outputs:
        they are scored clamped to [0, 1], as reconstructions are, and returned raw (for ``Health``)."""
        from shared.evaluation import validation_value

        per_source, values, first = [], [], None
        for k, inputs in enumerate(self.inputs):
            out = generate(inputs)
            first = out if first is None else first
            if not np.isfinite(out).all():  # dead: Health.dead_reason says so
                return {}, out
            recon = np.clip(out, 0, 1)
            if hasattr(self.score, "per_image"):
                per = self.score.per_image(recon, k == 0)
                s = {m: float(np.nanmean(v)) for m, v in per.items()}
                values.append(per[self.metric] if self.metric in per else validation_value(per, self.metric))
            else:  # a scorer of means alone: no per-image values
                s = dict(self.score(recon, k == 0))
            if "pixcorr" in s and "ssim" in s:
                s["pixcorr_ssim"] = (s["pixcorr"] + s["ssim"]) / 2
            per_source.append(s)
        keys = dict.fromkeys(k for s in per_source for k in s)
        out = {f"val_{k}": round(float(np.mean([s[k] for s in per_source if k in s])), 5) for k in keys}
        if values:
            out[HELD_VALUES] = [round(float(v), 5) for v in np.mean(values, axis=0)]
        return out, first
