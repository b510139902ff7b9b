"""Training of the conditional WGAN-GP generator, resumable tick by tick.

Each tick (``generator.tick_every`` generator steps) writes one status line, appends a
JSON line to ``stats.jsonl``, saves a sample grid from a fixed conditioning batch and
checkpoints all state dicts. A rerun with the same settings resumes from the last
checkpoint (also to train further with a larger ``generator.iterations``); a finished
run leaves ``generator.pt``, which later runs with the same settings reuse.

During training the true conditioning inputs are corrupted the way decoding corrupts
them: per sample, ``c = rho * x + sqrt(1 - rho^2) * rms * noise`` with ``rho`` drawn
uniformly from ``[generator.condition_corr_min, 1]`` (decoded features correlate only
partly with the truth).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from shared.config import Config
from shared.errors import UserError
from shared.featnet import FeatureNet
from shared.plotting import image_grid, training_plot
from stage2_generate.losses import feature_matching_loss, gradient_penalty, perceptual_loss, pixel_loss
from stage2_generate.models import Critic, Generator

log = logging.getLogger(__name__)


def training_key(cfg: Config) -> str:
    """Hash of everything that determines the trained generator (resume only on a match)."""
    from dataclasses import asdict

    g = asdict(cfg.generator)
    g.pop("tick_every")
    g.pop("iterations")  # more iterations continue the same training from its checkpoint
    f = cfg.features
    blob = json.dumps({"generator": g, "features": [f.network, f.weights, f.input_size], "root": cfg.data.root,
                       "train": asdict(cfg.data.train),
                       "simulation": asdict(cfg.simulation) if cfg.data.source == "simulated" else None},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def corrupt(inputs: list[torch.Tensor], rms: list[float], corr_min: float, gen: torch.Generator) -> list[torch.Tensor]:
    """Mix each sample's inputs with noise at a random correlation in [corr_min, 1]."""
    n = inputs[0].shape[0]
    rho = corr_min + (1 - corr_min) * torch.rand(n, generator=gen, device=inputs[0].device)
    out = []
    for x, r in zip(inputs, rms):
        shape = (n,) + (1,) * (x.ndim - 1)
        noise = torch.randn(x.shape, generator=gen, device=x.device) * r
        out.append(rho.view(shape) * x + torch.sqrt(1 - rho**2).view(shape) * noise)
    return out


def train_generator(cfg: Config, inputs: list[np.ndarray], rms: list[float], images: np.ndarray, device,
                    ckpt_dir: Path, run_dir: Path, key: str) -> Generator:
    """Train (or resume, or load) the generator on ``inputs`` -> ``images`` ``(n, 3, S, S)``."""
    from tqdm import tqdm

    gc = cfg.generator
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final_path, ckpt_path = ckpt_dir / "generator.pt", ckpt_dir / "checkpoint.pt"
    shapes = [tuple(x.shape[1:]) for x in inputs]
    torch.manual_seed(gc.seed)
    G = Generator(shapes, gc.image_size, gc.base_channels).to(device)
    if final_path.is_file():
        state = torch.load(final_path, map_location=device, weights_only=False)
        if state["key"] == key and state["step"] == gc.iterations:
            G.load_state_dict(state["generator"])
            log.info("generator already trained for %d steps (%s); reusing it", gc.iterations, final_path)
            return G.eval()
    D = Critic(gc.image_size, gc.base_channels).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=gc.lr, betas=(gc.beta1, gc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=gc.lr, betas=(gc.beta1, gc.beta2))
    comparator = FeatureNet(gc.comparator_network, gc.comparator_weights, gc.comparator_layers,
                            input_size=max(gc.image_size, 64)).to(device).eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(gc.seed)
    start = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state["key"] == key and state["step"] > gc.iterations:
            raise UserError(f"{ckpt_path} holds {state['step']} generator steps, more than generator.iterations="
                            f"{gc.iterations}; raise generator.iterations or delete {ckpt_dir} to train afresh")
        if state["key"] == key:
            G.load_state_dict(state["generator"])
            D.load_state_dict(state["critic"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            gen.set_state(state["rng"])
            start = state["step"]
            log.info("resuming generator training at step %d from %s", start, ckpt_path)
    X = [torch.from_numpy(x).to(device) for x in inputs]
    Y = torch.from_numpy(images).to(device)
    n = len(Y)
    fixed = torch.arange(min(10, n), device=device)
    stats_path = run_dir / "stats.jsonl"
    history: list[dict] = []
    t_tick = time.time()
    acc: dict[str, float] = {}

    def batch():
        idx = torch.randint(0, n, (gc.batch_size,), generator=gen, device=device)
        return corrupt([x[idx] for x in X], rms, gc.condition_corr_min, gen), Y[idx]

    bar = tqdm(range(start, gc.iterations), desc="train generator", unit="step", initial=start, total=gc.iterations)
    for step in bar:
        G.train()
        for _ in range(gc.n_critic):
            cond, real = batch()
            with torch.no_grad():
                fake = G(cond)
            w_dist = D(real).mean() - D(fake).mean()
            eps = torch.rand(real.shape[0], 1, 1, 1, generator=gen, device=device)
            gp = gradient_penalty(D, real, fake, gc.lambda_gp, eps=eps)
            opt_d.zero_grad(set_to_none=True)
            (gp - w_dist).backward()
            opt_d.step()
        cond, real = batch()
        fake = G(cond)
        losses = {"loss_pixel": pixel_loss(fake, real)}
        if gc.loss_perceptual:
            losses["loss_perceptual"] = perceptual_loss(comparator, fake, real)
        if gc.loss_adversarial:
            losses["loss_adversarial"] = -D(fake).mean()
        if gc.loss_feature_matching:
            losses["loss_feature_matching"] = feature_matching_loss(D, fake, real)
        weights = {"loss_pixel": gc.loss_pixel, "loss_perceptual": gc.loss_perceptual,
                   "loss_adversarial": gc.loss_adversarial, "loss_feature_matching": gc.loss_feature_matching}
        total = sum(weights[k] * v for k, v in losses.items())
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        for k, v in {**losses, "wasserstein": w_dist, "gp": gp}.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        done = step + 1
        if done % gc.tick_every == 0 or done == gc.iterations:
            steps_in_tick = done - (history[-1]["step"] if history else start)
            record = {"step": done, **{k: round(v / max(steps_in_tick, 1), 5) for k, v in acc.items()},
                      "sec_per_step": round((time.time() - t_tick) / max(steps_in_tick, 1), 3)}
            acc, t_tick = {}, time.time()
            history.append(record)
            with open(stats_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            log.info("step %d/%d %s", done, gc.iterations,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"))
            G.eval()
            with torch.no_grad():
                samples = G([x[fixed] for x in X]).cpu().numpy()
            image_grid({"true": images[: len(fixed)], f"step {done}": samples}, run_dir / "samples" / f"{done:06d}.png")
            _save_atomic({"key": key, "step": done, "generator": G.state_dict(), "critic": D.state_dict(),
                          "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": gen.get_state()},
                         ckpt_path)
    if history:
        training_plot(history, run_dir / "training.png")
    _save_atomic({"key": key, "step": gc.iterations, "generator": G.state_dict(), "input_shapes": shapes},
                 final_path)
    return G.eval()
