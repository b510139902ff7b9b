"""Benchmark: stage 2's training and generation speed and peak memory per image size.

For each output size (64, 128 and 256 px by default) the generator, critic and loss
networks of the given config are built exactly as training builds them, with
conditioning inputs of the config's layers at their entry sizes (random values: speed
does not depend on them); RGB, float32 (no bf16). Timed: one critic update (generator forward + critic loss
with gradient penalty, backward, Adam), one generator update (all switched-on losses,
backward, Adam) and inference (generator forward, no gradients). Each size runs in a
fresh process so its peak memory is its own (peak RSS on CPU; peak allocated CUDA
memory on GPU).

    python bench/bench_stage2.py                               # the demo's networks, CPU or GPU
    python bench/bench_stage2.py --config configs/dir_real.yaml --set features.weights=random:0
    python bench/bench_stage2.py --json results/bench_stage2.json

The device is the config's (``auto``: CUDA when present), so the same command gives
the GPU figures on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

import numpy as np
import torch

from shared.children import run_in_child
from shared.config import load_config
from shared.device import resolve_device
from shared.errors import UserError
from shared.featnet import FeatureNet
from stage2_generate.conditioning import LayerTransform
from stage2_generate.losses import CriticLoss
from stage2_generate.models import Critic, Generator
from stage2_generate.losses import LossNetworks, generator_losses, loss_weights, uses_critic


def _transforms(cfg) -> list[LayerTransform]:
    f = cfg.features
    shapes = FeatureNet(f.network, "random:0", cfg.generator.condition_layers, input_size=f.input_size).unit_shapes()
    return [LayerTransform(layer, shapes[layer], np.zeros(int(np.prod(shapes[layer])), np.float32),
                           np.ones(int(np.prod(shapes[layer])), np.float32), cfg.generator.image_size)
            for layer in cfg.generator.condition_layers]


def _timed(fn, steps: int, device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def measure(config: str, overrides: list[str], size: int, steps: int) -> dict:
    cfg = load_config(config, [*overrides, f"generator.image_size={size}"])
    g = cfg.generator
    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    transforms = _transforms(cfg)
    B = g.batch_size
    cond = [torch.randn(B, *tf.out_shape, device=device) for tf in transforms]
    real = torch.rand(B, 3, size, size, device=device)
    G = Generator([tf.out_shape for tf in transforms], size, g.base_channels).to(device)
    D = Critic(size, g.base_channels).to(device)
    critic_loss = CriticLoss(D, g.lambda_gp)
    nets = LossNetworks(cfg.generator, cfg.features, transforms).to(device).eval()
    weights = loss_weights(cfg.generator)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=g.lr), torch.optim.Adam(D.parameters(), lr=g.lr)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def critic_step():
        with torch.no_grad():
            fake = G(cond)
        loss, _, _ = critic_loss(real, fake, torch.rand(B, 1, 1, 1, device=device))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

    def generator_step():
        D.requires_grad_(False)
        fake = G(cond)
        losses = generator_losses(weights, D, nets, fake, real, cond)  # as training computes them
        total = sum(weights[k] * v for k, v in losses.items())
        D.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()

    def generate():
        with torch.no_grad():
            G(cond)

    t_critic = _timed(critic_step, steps, device)
    t_gen = _timed(generator_step, steps, device)
    t_infer = _timed(generate, steps, device)
    t_iter = (g.n_critic if uses_critic(weights) else 0) * t_critic + t_gen
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"device": str(device), "image_size": size, "batch": B, "n_critic": g.n_critic,
            "critic_steps_per_s": round(1 / t_critic, 2), "generator_steps_per_s": round(1 / t_gen, 2),
            "train_iterations_per_s": round(1 / t_iter, 3), "train_images_per_s": round(B / t_iter, 1),
            "generate_images_per_s": round(B / t_infer, 1), "peak_memory_mb": round(peak / 2**20),
            "memory_kind": "cuda allocated" if device.type == "cuda" else "process RSS",
            "generator_params_m": round(sum(p.numel() for p in G.parameters()) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--steps", type=int, default=3, help="timed steps of each kind (after one warm-up)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    try:  # each size in a child process: one that dies ends the benchmark at once, in one line
        rows = [run_in_child(ctx, measure, (args.config, args.set, size, args.steps),
                             f"the child process of {size} px") for size in args.sizes]
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    cols = ["device", "image_size", "batch", "critic_steps_per_s", "generator_steps_per_s", "train_iterations_per_s",
            "train_images_per_s", "generate_images_per_s", "peak_memory_mb", "generator_params_m"]
    print(f"config {args.config} {' '.join(args.set)}; one training iteration = n_critic={rows[0]['n_critic']} "
          f"critic steps + 1 generator step; memory: {rows[0]['memory_kind']}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
