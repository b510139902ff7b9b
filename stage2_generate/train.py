"""Training of the conditional WGAN-GP generator, resumable tick by tick.

Each tick (``generator.tick_every`` generator steps) checks the raw (unclamped) outputs for a
dead one (``watch.Health``: then it rolls back to the last healthy checkpoint with a smaller
learning rate, or stops), scores the validation hold-out (``watch.Validation``: means and
per-image values), writes one status line, appends a JSON line to ``stats.jsonl`` (of the run,
and of the training in its checkpoint folder, which spans resumes; it holds every tick's
per-image validation values), saves a sample grid from a fixed conditioning batch and
checkpoints all state dicts; the EMA of the tick with the highest mean validation score is kept
as ``best.pt``. When training ends, ``watch.TickChooser`` chooses between that tick and the last
one (the last unless the other wins beyond the hold-out's noise). A rerun with the same settings
resumes from the last checkpoint (also to train further with a larger ``generator.iterations``);
a finished run leaves ``generator.pt``: the exponential moving average of the generator's weights
at the chosen tick (the last tick without a hold-out), which reconstructs, with its step, score,
the choice's record and every rollback; later runs with the same settings reuse it.

What the generator is conditioned on is drawn by ``conditioning.ConditionSampler``; the losses and
the networks they look through are in ``losses.py``; the files it writes, and the training key that
names their folder, in ``generator_files.py``.

Under ``torchrun`` every process draws the same global batch from the same seeded
generator and trains on its share; gradients are averaged by DDP, so N processes
compute what one process computes on the same global batch.
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from shared import checkpoints
from shared.config import FeaturesConfig, GeneratorConfig
from shared.errors import UserError
from shared.faults import failpoint
from shared.plotting import image_grid, training_plot
from stage2_generate.conditioning import ConditionSampler, LayerTransform
from stage2_generate.generator_files import append_stats, build_generator, final_state, tick_records
from stage2_generate.losses import CriticLoss, LossNetworks, generator_losses, loss_weights, uses_critic
from stage2_generate.models import Critic, Generator
from stage2_generate.watch import HELD_VALUES, Health, TickChooser, Validation, image_spread, rollback

log = logging.getLogger(__name__)


TIMED_STEPS = 3  # steps timed before the projected training time is logged
HOUR = 3600.0


def projection(label: str, sec_per_step: float, steps_left: int, device_type: str, gc: GeneratorConfig
               ) -> tuple[int, str]:
    """``(log level, line)``: the projected time of the steps left; above an hour on a CPU, a warning that
    names the settings that cut it (changing nothing)."""
    left = sec_per_step * steps_left
    took = f"{left / 60:.0f} min" if left >= 60 else f"{left:.0f} s"
    text = (f"{label}: {sec_per_step:.2f} s per step over the first {TIMED_STEPS} steps; the {steps_left} steps "
            f"left take about {took}")
    if device_type != "cpu" or left <= HOUR:
        return logging.INFO, text
    return logging.WARNING, (f"{text} on this CPU. GPU-sized settings: fewer generator.iterations (now "
                             f"{gc.iterations}), generator.n_critic (now {gc.n_critic}), generator.batch_size (now "
                             f"{gc.batch_size}), generator.base_channels (now {gc.base_channels}) or "
                             f"generator.perceptual_layers / consistency_layers (now {list(gc.perceptual_layers)} / "
                             f"{list(gc.consistency_layers)}) cut it; configs/demo.yaml trains in about 8 min on 2 "
                             f"cores with 600 steps, n_critic 2, batch 16, base_channels 32 and [conv1_2, conv2_2]")


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_generator(gc: GeneratorConfig, features: FeaturesConfig, sampler: ConditionSampler,
                    transforms: list[LayerTransform], images: np.ndarray, device, ckpt_dir: Path, run_dir: Path | None, key: str, channels: int = 3,
                    rank: int = 0, world: int = 1, label: str = "generator",
                    validation: Validation | None = None) -> Generator:
    """Train (or resume, or load) the generator on ``images`` ``(n, 3, S, S)``; returns the EMA of the
    tick ``watch.TickChooser`` chooses on ``validation`` (the last tick without one). ``gc``: the generator section;
    ``features``: the feature section (the feature-consistency loss looks through its network).

    Every tick checks the outputs (``watch.Health``); a dead tick rolls back to the last healthy
    checkpoint with the learning rate times ``generator.rollback_lr_factor``, and after
    ``generator.max_rollbacks`` rollbacks training stops with a ``UserError``. With ``world`` > 1
    (torchrun), every process trains on its share of each global batch; only ``rank`` 0 logs,
    validates and writes files, and tells the others whether to roll back.
    """
    from tqdm import tqdm

    if gc.batch_size % world:
        raise UserError(f"'generator.batch_size' ({gc.batch_size}) must be divisible by the number of processes "
                        f"({world})")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final_path, ckpt_path, best_path = ckpt_dir / "generator.pt", ckpt_dir / "checkpoint.pt", ckpt_dir / "best.pt"
    shapes = [tuple(x.shape[1:]) for x in sampler.true]
    mean_image = images.mean(axis=0)
    G = build_generator(gc, shapes, channels, device, mean_image, transforms)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    state = final_state(final_path, device)
    if state is not None:
        if state["step"] == gc.iterations:
            G_ema.load_state_dict(state["generator"])
            log.info("%s already trained for %d steps (%s); reusing its step-%d generator", label, gc.iterations,
                     final_path, state.get("best_step", gc.iterations))
            return G_ema
    D = Critic(gc.image_size, gc.base_channels).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=gc.lr, betas=(gc.beta1, gc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=gc.lr, betas=(gc.beta1, gc.beta2))
    nets = LossNetworks(gc, features, transforms).to(device).eval()
    gen = torch.Generator()  # on the CPU: the same draws on every device and process
    modules = {"generator": G, "generator_ema": G_ema, "critic": D, "opt_g": opt_g, "opt_d": opt_d}
    metric = validation.metric if validation is not None else None
    # what survives a rollback or a resume: the learning-rate scale, every rollback, the ticks the choice needs
    ticks = TickChooser(metric)
    # and the CPU thread counts it trained under, since a thread count alone moves the trained generator's scores
    track = {"lr_scale": 1.0, "rollbacks": [], "ticks": ticks.state(), "threads": []}

    def restore(verb: str) -> int:
        """Load the newest healthy checkpoint (else the initial state); returns its step."""
        state, path = checkpoints.load_latest(ckpt_path, device)
        if state is None:
            fresh = build_generator(gc, shapes, channels, device, mean_image, transforms)
            G.load_state_dict(fresh.state_dict())
            G_ema.load_state_dict(fresh.state_dict())
            D.load_state_dict(Critic(gc.image_size, gc.base_channels).to(device).state_dict())  # as first built
            opt_g.state.clear()
            opt_d.state.clear()
            gen.manual_seed(gc.seed)
            track["ticks"] = ticks.load(None).state()  # no healthy tick before step 0
            return 0
        for name, module in modules.items():  # checked by preflight(): this training's, within gc.iterations
            module.load_state_dict(state[name])
        gen.set_state(state["rng"].cpu())  # map_location moved it to the device
        # a resume takes the whole record; a rollback keeps its own learning-rate cut and rollbacks
        kept = track if verb == "resuming" else {"ticks": None}
        track.update({k: state[k] for k in kept if k in state})
        ticks.load(track["ticks"])
        if rank == 0:
            log.info("%s %s training at step %d from %s", verb, label, state["step"], path)
        return state["step"]

    gen.manual_seed(gc.seed)
    start = restore("resuming") if ckpt_path.is_file() or checkpoints.previous(ckpt_path).is_file() else 0
    if torch.get_num_threads() not in track["threads"]:  # distinct counts: a resume under the same count adds none
        track["threads"] = [*track["threads"], torch.get_num_threads()]

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
    weights = loss_weights(gc)
    fixed = torch.arange(min(10, n))
    health = Health(image_spread(images))
    t_tick = time.time()
    acc: dict[str, float] = {}

    def batch():
        idx = torch.randint(0, n, (gc.batch_size,), generator=gen)
        cond = sampler(idx, gen)
        return [c[share] for c in cond], Y[idx[share].to(device)]

    bar = tqdm(total=gc.iterations, desc=f"train {label}", unit="step", initial=start, disable=rank != 0)
    t_first = time.time()
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
        if step - start == TIMED_STEPS and rank == 0 and t_first:  # the first steps timed: what the rest will take
            level, text = projection(label, (time.time() - t_first) / TIMED_STEPS, gc.iterations - step, device.type, gc)
            log.log(level, text)
            t_first = 0.0  # once per run, not again after a rollback
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
                scores, val_recon = validation(lambda inputs: raw_outputs(G_ema, inputs, device))
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
            if validation is not None and HELD_VALUES in record:
                score = record.get(validation.key)
                if ticks.add(step, record[HELD_VALUES], score):  # the highest so far: its weights are kept
                    checkpoints.save({"key": key, "step": step, "generator": G_ema.state_dict(), "score": score},
                                     best_path, keep_previous=False, fault_point="best.write")
                track["ticks"] = ticks.state()
            _tick_outputs(record, gc.iterations, np.clip(samples[f"{label} (EMA) on the fixed batch"], 0, 1),
                          images[fixed.numpy()], [run_dir, ckpt_dir], label)
            checkpoints.save({"key": key, "step": step, **{k: m.state_dict() for k, m in modules.items()},
                              "rng": gen.get_state(), **track}, ckpt_path)
        tick_start, t_tick = step, time.time()
    bar.close()
    choice = ticks.choice(last_step=gc.iterations)
    if rank == 0 and choice.step != gc.iterations:  # an earlier tick won beyond noise: its EMA reconstructs
        best = checkpoints.load(best_path, device) if best_path.is_file() else None
        if best is not None and best.get("key") == key and best.get("step") == choice.step:
            G_ema.load_state_dict(best["generator"])
        else:  # best.pt was written by a tick a resume has undone: only the last tick's weights are sure
            log.warning("%s: %s does not hold the step-%d generator; the last tick reconstructs", label, best_path,
                        choice.step)
            ticks.drop_highest()
            choice = ticks.choice(last_step=gc.iterations)
    if rank == 0:
        stats = tick_records(ckpt_dir / "stats.jsonl")
        if stats:
            training_plot(stats, [f / "training.png" for f in (ckpt_dir, run_dir) if f is not None],
                          best_step=choice.step if validation else None,
                          why="the last: too few validation images to choose" if choice.holdout_too_small else "")
        if validation is not None:
            log.log(logging.WARNING if choice.holdout_too_small else logging.INFO,
                    "%s: the step-%d generator reconstructs (%s %s): %s", label, choice.step, validation.key,
                    "n/a" if choice.score is None else f"{choice.score:.4f}", choice.reason())
        checkpoints.save({"key": key, "step": gc.iterations, "generator": G_ema.state_dict(),
                          "input_shapes": shapes, "channels": channels, "best_step": choice.step,
                          "best_score": choice.score, "validation_metric": metric, "tick": choice.record(),
                          "rollbacks": track["rollbacks"], "lr_scale": track["lr_scale"], "threads": track["threads"]},
                         final_path, keep_previous=False)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return G_ema


def _generate(G: Generator, sampler: ConditionSampler, rows: torch.Tensor) -> np.ndarray:
    """``G``'s raw outputs (unclamped, see ``raw_outputs``) of the true features of training images ``rows``."""
    return raw_outputs(G, [x[rows.to(x.device)] for x in sampler.true])


def raw_outputs(G: Generator, inputs: list, device=None, batch: int = 64) -> np.ndarray:
    """``G``'s outputs ``(n, C, S, S)`` of inputs ``[(n, *shape_i)]`` (numpy or tensors) before the clamp to
    [0, 1] that evaluation mode applies: what ``watch.Health`` judges. The generator has no batch
    statistics nor dropout, so training mode differs from evaluation mode by that clamp alone."""
    was_training = G.training
    G.train()
    out = []
    try:
        with torch.no_grad():
            for s in range(0, len(inputs[0]), batch):
                part = [x[s:s + batch] if torch.is_tensor(x) else
                        torch.from_numpy(np.ascontiguousarray(x[s:s + batch])).float().to(device) for x in inputs]
                out.append(G(part).float().cpu().numpy())
    finally:
        G.train(was_training)
    return np.concatenate(out)


def _agree(dead: str | None, world: int, device) -> str | None:
    """Rank 0's verdict on the tick, shared with every torchrun process (they roll back together)."""
    if world == 1:
        return dead
    import torch.distributed as dist

    box = [dead]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def _rollback(reason: str, step: int, track: dict, gc, folders: list[Path | None], label: str, rank: int) -> None:
    """Record a dead tick and cut the learning rate, or stop when the rollbacks are spent (``watch.rollback``)."""
    event = rollback(reason, step, track, gc.lr, gc.rollback_lr_factor, gc.max_rollbacks, label, "generator.lr")
    if rank == 0:
        log.warning("%s: dead output at step %d (%s); rolling back to the last healthy checkpoint with the learning "
                    "rate cut to %.2g (rollback %d of at most %d)", label, step, reason, event["lr"],
                    len(track["rollbacks"]), gc.max_rollbacks)
        append_stats(event, folders)


def _tick_outputs(record: dict, iterations: int, samples: np.ndarray, true: np.ndarray,
                  folders: list[Path | None], label: str = "generator") -> None:
    """The tick's status line, its ``stats.jsonl`` line and, in the run folder, its sample grid."""
    log.info("%s step %d/%d %s", label, record["step"], iterations,
             " ".join(f"{k}={v:.4g}" for k, v in record.items()
                      if k != "step" and isinstance(v, (int, float)) and v is not None))
    append_stats(record, folders)
    if folders[0] is not None:
        image_grid({"true": true, f"step {record['step']}": samples},
                   folders[0] / "samples" / f"{record['step']:06d}.png")
