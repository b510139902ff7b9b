"""Training of the conditional WGAN-GP generator, resumable tick by tick.

Each tick (``generator.tick_every`` generator steps) checks the outputs for a dead one
(``watch.Health``: then it rolls back to the last healthy checkpoint with a smaller learning
rate, or stops), scores the validation hold-out (``watch.Validation``), writes one status
line, appends a JSON line to ``stats.jsonl`` (of the run, and of the training in its
checkpoint folder, which spans resumes), saves a sample grid from a fixed conditioning batch
and checkpoints all state dicts; the validation-best tick's EMA is kept as ``best.pt``. A
rerun with the same settings resumes from the last checkpoint (also to train further with a
larger ``generator.iterations``); a finished run leaves ``generator.pt``: the exponential
moving average of the generator's weights at the validation-best tick (the last tick without a
hold-out), which reconstructs, with its step, score and every rollback; later runs with the
same settings reuse it.

What the generator is conditioned on during training (``generator.train_inputs``):

* ``true``: the true features of the training images;
* ``corrupted``: true features mixed with noise per sample,
  ``c = rho * x + sqrt(1 - rho^2) * rms * noise`` with ``rho`` uniform in
  ``[generator.condition_corr_min, 1]``;
* ``oof``: stage 1's out-of-fold decoded features of the training images (from a
  random subject and ROI per sample), i.e. what decoding really produces;
* ``mix``: per sample one of the above with probabilities ``mix_true``,
  ``mix_corrupted``, ``mix_oof``.

Under ``torchrun`` every process draws the same global batch from the same seeded
generator and trains on its share; gradients are averaged by DDP, so N processes
compute what one process computes on the same global batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared import checkpoints
from shared.config import Config, perceptual_weights
from shared.faults import failpoint
from shared.errors import UserError
from shared.featnet import FeatureNet
from shared.plotting import image_grid, training_plot
from stage2_generate.conditioning import LayerTransform
from stage2_generate.losses import (CriticLoss, feature_consistency_loss, feature_matching_loss, perceptual_loss,
                                    pixel_loss)
from stage2_generate.models import Critic, Generator, generate
from stage2_generate.watch import Health, Validation, image_spread

log = logging.getLogger(__name__)

LOSSES = ("adversarial", "pixel", "perceptual", "feature_matching", "feature_consistency")


def training_key(cfg: Config, channels: int = 3, inputs: list[Path] = (), tag: dict | None = None) -> str:
    """Hash of everything that determines the trained generator (resume only on a match).

    ``inputs`` are the feature-store files training reads; their size and modification
    time enter the hash, so features decoded again (another seed, decoder or an
    ``import-lab``) train a new generator. ``tag`` tells apart generators of other methods
    (``end_to_end``) trained with the same settings.
    """
    from dataclasses import asdict

    g = asdict(cfg.generator)
    g.pop("iterations")  # more iterations continue the same training from its checkpoint
    for name in ("max_rollbacks", "rollback_lr_factor"):  # a run stopped by dead ticks resumes with more rollbacks
        g.pop(name)
    f = cfg.features
    blob = json.dumps({"generator": g, "perceptual_weights": perceptual_weights(cfg), "channels": channels,
                       "features": [f.network, f.weights, f.input_size], "root": cfg.data.root,
                       "train": asdict(cfg.data.train), "decoder": asdict(cfg.decoder),
                       "subjects": cfg.data.subjects, "rois": cfg.data.rois, "seed": cfg.seed,
                       "inputs": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in inputs],
                       "simulation": asdict(cfg.simulation) if cfg.data.source == "simulated" else None,
                       # the hold-out decides which images train; 2: the output starts at the mean image, unsquashed
                       "validation": [cfg.eval.validation_fraction, cfg.eval.validation_metric], "version": 2,
                       **({"tag": tag} if tag else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_checkpoint(state: dict, key: str, modules: dict[str, torch.nn.Module], path: Path) -> None:
    """Refuse, in one line, a checkpoint of another training or whose tensors do not fit ``modules``."""
    if not isinstance(state, dict) or "key" not in state:
        raise UserError(f"{path} is not a generator checkpoint of this tool; move it away or delete it")
    if state["key"] != key:
        raise UserError(f"{path} is a checkpoint of another training (key {state['key']}, this one is {key}); "
                        f"it was copied here by hand: move it away or delete it to train afresh")
    for name, module in modules.items():
        want = module.state_dict()
        have = state.get(name, {})
        bad = [k for k in want if k not in have or tuple(have[k].shape) != tuple(want[k].shape)]
        if bad or set(have) - set(want):
            k = (bad or sorted(set(have) - set(want)))[0]
            shape = tuple(have[k].shape) if k in have else "missing"
            raise UserError(f"{path} holds a generator of another architecture ({name} tensor {k}: {shape}, this "
                            f"config needs {tuple(want[k].shape) if k in want else 'none'}); delete "
                            f"{path.parent} to train afresh, or use the config it was trained with")


def _final_state(path: Path, device, warn: bool = True) -> dict | None:
    """The trained generator's file, or None when there is none or it is damaged (then training resumes
    from its last checkpoint, which at the final step rebuilds it without a step)."""
    if not path.is_file():
        return None
    try:
        return checkpoints.load(path, device)
    except checkpoints.CorruptCheckpoint as exc:
        if warn:
            log.warning("%s; rebuilding it from the training checkpoints", exc)
        return None


def build_generator(cfg: Config, shapes: list[tuple], channels: int, device,
                    mean_image: np.ndarray | None = None) -> Generator:
    """The seeded, untrained generator; it starts at ``mean_image`` ``(3, S, S)`` (the training images' mean)."""
    torch.manual_seed(cfg.generator.seed)
    return Generator(shapes, cfg.generator.image_size, cfg.generator.base_channels, channels,
                     mean_image=mean_image).to(device)


def preflight(cfg: Config, ckpt_dir: Path, key: str, shapes: list[tuple], channels: int) -> None:
    """Check the generator files a training would resume from, before anything is written."""
    G = build_generator(cfg, shapes, channels, "cpu")
    final_path, ckpt_path = ckpt_dir / "generator.pt", ckpt_dir / "checkpoint.pt"
    final = _final_state(final_path, "cpu", warn=False)
    if final is not None:
        check_checkpoint(final, key, {"generator": G}, final_path)
    state, path = checkpoints.load_latest(ckpt_path, "cpu")
    if state is not None:
        check_checkpoint(state, key, {"generator": G, "generator_ema": G}, path)
        if state["step"] > cfg.generator.iterations:
            raise UserError(f"{path} holds {state['step']} generator steps, more than generator.iterations="
                            f"{cfg.generator.iterations}; raise generator.iterations or delete {ckpt_dir} to train "
                            f"afresh")


def corrupt(inputs: list[torch.Tensor], rms: list[float], corr_min: float, gen: torch.Generator) -> list[torch.Tensor]:
    """Mix each sample's inputs with noise at a random correlation in [corr_min, 1]."""
    n = inputs[0].shape[0]
    rho = corr_min + (1 - corr_min) * torch.rand(n, generator=gen)
    out = []
    for x, r in zip(inputs, rms):
        shape = (n,) + (1,) * (x.ndim - 1)
        noise = torch.randn(x.shape, generator=gen).to(x.device) * r
        rho_x = rho.to(x.device).view(shape)
        out.append(rho_x * x + torch.sqrt(1 - rho_x**2) * noise)
    return out


@dataclass
class ConditionSampler:
    """Conditioning inputs of a batch of training images, drawn as ``generator.train_inputs`` says.

    ``true``: per layer ``(n_images, *shape)``; ``oof``: per layer ``(n_sources, n_images, *shape)``
    (one source per subject x ROI) or None; ``probs``: (true, corrupted, oof).
    """

    true: list[torch.Tensor]
    oof: list[torch.Tensor] | None
    rms: list[float]
    probs: tuple[float, float, float]
    corr_min: float

    @classmethod
    def from_config(cls, cfg: Config, true, oof, rms) -> ConditionSampler:
        g = cfg.generator
        probs = {"true": (1.0, 0.0, 0.0), "corrupted": (0.0, 1.0, 0.0), "oof": (0.0, 0.0, 1.0),
                 "mix": (g.mix_true, g.mix_corrupted, g.mix_oof)}[g.train_inputs]
        total = sum(probs)
        return cls(true, oof, rms, tuple(p / total for p in probs), g.condition_corr_min)

    def __call__(self, idx: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        n = len(idx)
        kind = torch.multinomial(torch.tensor(self.probs), n, replacement=True, generator=gen)
        idx_d = idx.to(self.true[0].device)
        out = [x[idx_d] for x in self.true]
        if self.probs[1] > 0:
            noisy = corrupt(out, self.rms, self.corr_min, gen)
            out = self._where(kind == 1, noisy, out)
        if self.probs[2] > 0:
            src = torch.randint(0, self.oof[0].shape[0], (n,), generator=gen).to(idx_d.device)
            decoded = [o[src, idx_d].float() for o in self.oof]
            out = self._where(kind == 2, decoded, out)
        return out

    @staticmethod
    def _where(mask: torch.Tensor, a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.where(mask.to(x.device).view(-1, *[1] * (x.ndim - 1)), x, y) for x, y in zip(a, b)]


class LossNetworks(torch.nn.Module):
    """The fixed networks the generator's losses look through: the perceptual network and
    the feature network (feature consistency), one forward pass when they are the same."""

    def __init__(self, cfg: Config, transforms: list[LayerTransform]):
        super().__init__()
        g, f = cfg.generator, cfg.features
        self.percep_layers = list(g.perceptual_layers) if g.loss_perceptual > 0 else []
        names = g.consistency_layers or g.condition_layers
        self.consist = [tf for tf in transforms if tf.layer in names] if g.loss_feature_consistency > 0 else []
        consist_layers = [tf.layer for tf in self.consist]
        same = g.perceptual_network == f.network and perceptual_weights(cfg) == f.weights
        self.shared = same and bool(self.percep_layers) and bool(consist_layers)
        self.percep = self.featnet = None
        if self.shared:
            self.percep = FeatureNet(f.network, f.weights, sorted(set(self.percep_layers) | set(consist_layers)),
                                     input_size=f.input_size)
        else:
            if self.percep_layers:
                size = f.input_size if g.perceptual_network == f.network else max(g.image_size, 64)
                self.percep = FeatureNet(g.perceptual_network, perceptual_weights(cfg), self.percep_layers,
                                         input_size=size)
            if consist_layers:
                self.featnet = FeatureNet(f.network, f.weights, consist_layers, input_size=f.input_size)
        self.consist_index = [[tf.layer for tf in transforms].index(tf.layer) for tf in self.consist]

    def losses(self, fake: torch.Tensor, real: torch.Tensor, cond: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        fake_feats = self.percep(fake) if self.percep is not None else {}
        if self.percep_layers:
            with torch.no_grad():
                real_feats = self.percep(real)
            out["perceptual"] = perceptual_loss({k: fake_feats[k] for k in self.percep_layers},
                                                {k: real_feats[k] for k in self.percep_layers})
        if self.consist:
            feats = fake_feats if self.shared else self.featnet(fake)
            out["feature_consistency"] = feature_consistency_loss(
                [tf.apply_torch(feats[tf.layer]) for tf in self.consist], [cond[i] for i in self.consist_index])
        return out


def loss_weights(cfg: Config) -> dict[str, float]:
    """``{loss name: weight}`` of the generator's losses (0 = off)."""
    return {name: getattr(cfg.generator, f"loss_{name}") for name in LOSSES}


def uses_critic(weights: dict[str, float]) -> bool:
    """Whether any switched-on loss looks through the critic (else it is not trained)."""
    return weights["adversarial"] > 0 or weights["feature_matching"] > 0


def generator_losses(weights: dict[str, float], D: Critic, nets: LossNetworks, fake: torch.Tensor,
                     real: torch.Tensor, cond: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every switched-on loss of one generator step (unweighted)."""
    losses = {"pixel": pixel_loss(fake, real)} if weights["pixel"] else {}
    if weights["adversarial"]:
        losses["adversarial"] = -D(fake).mean()
    if weights["feature_matching"]:
        losses["feature_matching"] = feature_matching_loss(D, fake, real)
    losses.update(nets.losses(fake, real, cond))
    return losses


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_generator(cfg: Config, sampler: ConditionSampler, transforms: list[LayerTransform], images: np.ndarray,
                    device, ckpt_dir: Path, run_dir: Path | None, key: str, channels: int = 3,
                    rank: int = 0, world: int = 1, label: str = "generator",
                    validation: Validation | None = None) -> Generator:
    """Train (or resume, or load) the generator on ``images`` ``(n, 3, S, S)``; returns the EMA of the
    tick that scored best on ``validation`` (the last tick without one).

    Every tick checks the outputs (``watch.Health``); a dead tick rolls back to the last healthy
    checkpoint with the learning rate times ``generator.rollback_lr_factor``, and after
    ``generator.max_rollbacks`` rollbacks training stops with a ``UserError``. With ``world`` > 1
    (torchrun), every process trains on its share of each global batch; only ``rank`` 0 logs,
    validates and writes files, and tells the others whether to roll back.
    """
    from tqdm import tqdm

    gc = cfg.generator
    if gc.batch_size % world:
        raise UserError(f"'generator.batch_size' ({gc.batch_size}) must be divisible by the number of processes "
                        f"({world})")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final_path, ckpt_path, best_path = ckpt_dir / "generator.pt", ckpt_dir / "checkpoint.pt", ckpt_dir / "best.pt"
    shapes = [tuple(x.shape[1:]) for x in sampler.true]
    mean_image = images.mean(axis=0)
    G = build_generator(cfg, shapes, channels, device, mean_image)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    state = _final_state(final_path, device)
    if state is not None:
        if state["step"] == gc.iterations:
            G_ema.load_state_dict(state["generator"])
            log.info("%s already trained for %d steps (%s); reusing its step-%d generator", label, gc.iterations,
                     final_path, state.get("best_step", gc.iterations))
            return G_ema
    D = Critic(gc.image_size, gc.base_channels).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=gc.lr, betas=(gc.beta1, gc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=gc.lr, betas=(gc.beta1, gc.beta2))
    nets = LossNetworks(cfg, transforms).to(device).eval()
    gen = torch.Generator()  # on the CPU: the same draws on every device and process
    modules = {"generator": G, "generator_ema": G_ema, "critic": D, "opt_g": opt_g, "opt_d": opt_d}
    # what survives a rollback or a resume: the learning-rate scale, every rollback, the best tick so far
    track = {"lr_scale": 1.0, "rollbacks": [], "best_step": None, "best_score": None}

    def restore(verb: str) -> int:
        """Load the newest healthy checkpoint (else the initial state); returns its step."""
        state, path = checkpoints.load_latest(ckpt_path, device)
        if state is None:
            fresh = build_generator(cfg, shapes, channels, device, mean_image)
            G.load_state_dict(fresh.state_dict())
            G_ema.load_state_dict(fresh.state_dict())
            D.load_state_dict(Critic(gc.image_size, gc.base_channels).to(device).state_dict())  # as first built
            opt_g.state.clear()
            opt_d.state.clear()
            gen.manual_seed(gc.seed)
            return 0
        for name, module in modules.items():  # checked by preflight(): this training's, within gc.iterations
            module.load_state_dict(state[name])
        gen.set_state(state["rng"].cpu())  # map_location moved it to the device
        # a resume takes the whole record; a rollback keeps its own learning-rate cut and rollbacks
        kept = track if verb == "resuming" else {"best_step": None, "best_score": None}
        track.update({k: state[k] for k in kept if k in state})
        if rank == 0:
            log.info("%s %s training at step %d from %s", verb, label, state["step"], path)
        return state["step"]

    gen.manual_seed(gc.seed)
    start = restore("resuming") if ckpt_path.is_file() or checkpoints.previous(ckpt_path).is_file() else 0

    def set_lr() -> None:
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = gc.lr * track["lr_scale"]

    set_lr()
    critic_loss = CriticLoss(D, gc.lambda_gp)
    G_train, critic_train = G, critic_loss
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_train, critic_train = DDP(G, device_ids=ids), DDP(critic_loss, device_ids=ids)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if gc.bf16 and device.type == "cuda" else nullcontext()
    if gc.bf16 and device.type != "cuda" and rank == 0:
        log.warning("generator.bf16 is ignored on %s (bf16 autocast runs on CUDA only)", device)
    Y = torch.from_numpy(images).to(device)
    n = len(Y)
    share = slice(rank * gc.batch_size // world, (rank + 1) * gc.batch_size // world)
    weights = loss_weights(cfg)
    fixed = torch.arange(min(10, n))
    health = Health(image_spread(images))
    t_tick = time.time()
    acc: dict[str, float] = {}

    def batch():
        idx = torch.randint(0, n, (gc.batch_size,), generator=gen)
        cond = sampler(idx, gen)
        return [c[share] for c in cond], Y[idx[share].to(device)]

    bar = tqdm(total=gc.iterations, desc=f"train {label}", unit="step", initial=start, disable=rank != 0)
    critic_used = uses_critic(weights)
    w_dist = gp = torch.zeros(())
    step, tick_start = start, start
    while step < gc.iterations:
        G.train()
        for _ in range(gc.n_critic if critic_used else 0):  # no loss looks through an unused critic
            cond, real = batch()
            eps = torch.rand(gc.batch_size, 1, 1, 1, generator=gen)[share].to(device)
            with torch.no_grad(), amp:
                fake = G(cond)
            with amp:
                loss_d, w_dist, gp = critic_train(real, fake.float(), eps)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        cond, real = batch()
        D.requires_grad_(False)
        with amp:
            fake = G_train(cond).float()
            losses = generator_losses(weights, D, nets, fake, real, cond)
            total = sum(weights[k] * v.float() for k, v in losses.items())
        D.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        step += 1
        bar.update(1)
        _ema_update(G_ema, G, min(gc.ema_decay, (1 + step) / (10 + step)))
        failpoint("train.step")
        for k, v in {**{f"loss_{k}": v for k, v in losses.items()}, "wasserstein": w_dist, "gp": gp}.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        if step % gc.tick_every and step != gc.iterations:
            continue
        if world > 1:
            import torch.distributed as dist

            vals = torch.tensor(list(acc.values()), dtype=torch.float64, device=device)
            dist.all_reduce(vals)
            acc = dict(zip(acc, (vals / world).tolist()))
        steps_in_tick = max(step - tick_start, 1)
        record = {"step": step, **{k: round(v / steps_in_tick, 5) for k, v in acc.items()},
                  "sec_per_step": round((time.time() - t_tick) / steps_in_tick, 3), "lr": gc.lr * track["lr_scale"]}
        acc = {}
        dead = None
        if rank == 0:
            samples = {f"{label} (EMA) on the fixed batch": _generate(G_ema, sampler, fixed),
                       f"{label} (trained weights) on the fixed batch": _generate(G, sampler, fixed)}
            dead = None if all(np.isfinite(v) for v in record.values()) else "a loss is not finite"
            if validation is not None and dead is None:
                scores, val_recon = validation(lambda inputs: generate(G_ema, inputs, device))
                record.update(scores)
                samples[f"{label} (EMA) on the validation images"] = val_recon
            dead = dead or health.dead_reason(samples)
        dead = _agree(dead, world, device)
        if dead is not None:
            try:
                _rollback(dead, step, track, gc, [run_dir, ckpt_dir], label, rank)
            except UserError:
                bar.close()  # the error line comes last
                raise
            step = tick_start = restore("rolling back")
            if step == 0:
                health.reset()
            set_lr()
            bar.reset(total=gc.iterations)
            bar.update(step)
            t_tick = time.time()
            continue
        if rank == 0:
            score = record.get(validation.key) if validation is not None else None
            if validation is None or track["best_score"] is None or score > track["best_score"]:
                track["best_step"], track["best_score"] = step, score
                if validation is not None:
                    checkpoints.save({"key": key, "step": step, "generator": G_ema.state_dict(), "score": score},
                                     best_path, keep_previous=False, fault_point="best.write")
            _tick_outputs(record, gc.iterations, samples[f"{label} (EMA) on the fixed batch"], images[fixed.numpy()],
                          [run_dir, ckpt_dir], label)
            checkpoints.save({"key": key, "step": step, **{k: m.state_dict() for k, m in modules.items()},
                              "rng": gen.get_state(), **track}, ckpt_path)
        tick_start, t_tick = step, time.time()
    bar.close()
    if validation is not None and track["best_step"] is not None and track["best_step"] != gc.iterations:
        best = checkpoints.load(best_path, device)
        G_ema.load_state_dict(best["generator"])
    if rank == 0:
        ticks = _tick_records(ckpt_dir / "stats.jsonl")
        for folder in (ckpt_dir, run_dir):
            if ticks and folder is not None:
                training_plot(ticks, folder / "training.png", best_step=track["best_step"] if validation else None)
        if validation is not None:
            log.info("%s: the step-%d generator scores best on the validation images (%s %.4f); it reconstructs",
                     label, track["best_step"], validation.key, track["best_score"])
        checkpoints.save({"key": key, "step": gc.iterations, "generator": G_ema.state_dict(),
                          "input_shapes": shapes, "channels": channels, "best_step": track["best_step"],
                          "best_score": track["best_score"], "validation_metric": validation.metric if validation
                          else None, "rollbacks": track["rollbacks"], "lr_scale": track["lr_scale"]},
                         final_path, keep_previous=False)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return G_ema


def training_record(ckpt_dir: Path) -> dict:
    """What a finished training reports: the tick that reconstructs, its validation score, every rollback."""
    state = checkpoints.load(ckpt_dir / "generator.pt", "cpu")
    return {k: state.get(k) for k in ("best_step", "best_score", "validation_metric", "rollbacks", "lr_scale")}


def _generate(G: Generator, sampler: ConditionSampler, rows: torch.Tensor) -> np.ndarray:
    """``G``'s images (eval mode, in [0, 1]) of the true features of training images ``rows``."""
    was_training = G.training
    G.eval()
    with torch.no_grad():
        out = G([x[rows.to(x.device)] for x in sampler.true]).float().cpu().numpy()
    G.train(was_training)
    return out


def _agree(dead: str | None, world: int, device) -> str | None:
    """Rank 0's verdict on the tick, shared with every torchrun process (they roll back together)."""
    if world == 1:
        return dead
    import torch.distributed as dist

    box = [dead]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def _tick_records(path: Path) -> list[dict]:
    """The tick records of a training's whole ``stats.jsonl`` (over resumes and rollbacks): the last one of
    each step, in step order."""
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "event" not in record:
            by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def _append_stats(record: dict, folders: list[Path | None]) -> None:
    """One JSON line in ``stats.jsonl`` of the run and of the training (which spans resumes)."""
    for folder in folders:
        if folder is not None:
            with open(folder / "stats.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")


def _rollback(reason: str, step: int, track: dict, gc, folders: list[Path | None], label: str, rank: int) -> None:
    """Record a dead tick and cut the learning rate, or stop when the rollbacks are spent."""
    if len(track["rollbacks"]) >= gc.max_rollbacks:
        raise UserError(f"the {label}'s output died at step {step} ({reason}) after {len(track['rollbacks'])} "
                        f"rollback(s) with the learning rate cut to {gc.lr * track['lr_scale']:.2g}; lower "
                        f"generator.lr (e.g. {gc.lr * track['lr_scale'] * gc.rollback_lr_factor:.2g}) or raise "
                        f"generator.max_rollbacks, and look at the training images and stats.jsonl")
    track["lr_scale"] *= gc.rollback_lr_factor
    event = {"step": step, "event": "rollback", "cause": reason, "lr": gc.lr * track["lr_scale"]}
    track["rollbacks"].append(event)
    if rank == 0:
        log.warning("%s: dead output at step %d (%s); rolling back to the last healthy checkpoint with the learning "
                    "rate cut to %.2g (rollback %d of at most %d)", label, step, reason, event["lr"],
                    len(track["rollbacks"]), gc.max_rollbacks)
        _append_stats(event, folders)


def _tick_outputs(record: dict, iterations: int, samples: np.ndarray, true: np.ndarray,
                  folders: list[Path | None], label: str = "generator") -> None:
    """The tick's status line, its ``stats.jsonl`` line and, in the run folder, its sample grid."""
    log.info("%s step %d/%d %s", label, record["step"], iterations,
             " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step" and v is not None))
    _append_stats(record, folders)
    if folders[0] is not None:
        image_grid({"true": true, f"step {record['step']}": samples},
                   folders[0] / "samples" / f"{record['step']:06d}.png")
