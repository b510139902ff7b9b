"""Iterative feature inversion (Shen, Horikawa, Majima, Kamitani 2019, PLOS Comput Biol).

An image is optimised so that the feature network's activations of several layers match
the decoded features, as in the paper:

* decoded features are first *norm-corrected*: each image's decoded vector of a layer is
  rescaled to the standard deviation true features of that layer typically have (the mean,
  over training images, of each image's SD across units); decoding shrinks them;
* the loss is ``sum_l w_l ||f_l(x) - d_l||^2`` with ``w_l = 1 / ||d_l||^2``, normalised so
  that the weights of one image sum to 1;
* gradient descent with momentum, the gradient divided by its mean absolute value (the
  lab's ``icnn_gd``), the step size decayed linearly over a fixed number of iterations.

What is optimised (the ``render`` of ``invert``; see ``inversion.py``): for ``inversion_dgn``,
the conditioning inputs of this project's trained generator, which then plays the part of
the paper's deep generator network (DGN) as the image prior, starting from the decoded
features themselves, i.e. from the WGAN-GP reconstruction, so the method refines it (the
generator renders in evaluation mode, its output clamped to [0, 1]: what is optimised is what
is shown, and a pixel held at 0 or 1 by the clamp passes no gradient); for
``inversion_pixels``, the pixels, starting from the mean training image (clamped to [0, 1]
after every step). Both work at the generator's image size, whatever it is; the feature network
resizes its input. Every image of a batch is optimised at once, independently (the loss is a
sum of per-image terms).

What differs from the paper: torchvision's VGG19 instead of Caffe's, and no downloaded
DGN (the prior is this project's own generator, trained on the training stimuli).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from shared.featnet import FeatureNet


def typical_sd(true_train, chunk: int = 4096, rows: np.ndarray | None = None) -> float:
    """The SD true features of a layer typically have: the mean over images of each image's SD across
    units. ``true_train``: ``(n_images, n_units)``, an array or a store ``FeatureArray`` (read a chunk
    of units at a time, so a large layer is never held whole); ``rows``: the images to average over
    (default all)."""
    blocks = (b for _, b in true_train.iter_units(chunk)) if hasattr(true_train, "iter_units") else [true_train]
    s = ss = 0.0
    n = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float64)
        s, ss, n = s + block.sum(axis=1), ss + (block**2).sum(axis=1), n + block.shape[1]
    sd = np.sqrt(np.maximum(ss - s**2 / n, 0) / (n - 1))
    return float((sd if rows is None else sd[rows]).mean())


def norm_corrected(decoded: np.ndarray, sd: float) -> np.ndarray:
    """Each row of ``decoded`` ``(n, n_units)`` rescaled to SD ``sd`` across units (mean kept)."""
    mean = decoded.mean(axis=1, keepdims=True)
    own = decoded.std(axis=1, ddof=1, keepdims=True)
    return (mean + (decoded - mean) / np.maximum(own, 1e-12) * sd).astype(np.float32)


def layer_weights(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per image, ``1 / ||d_l||^2`` normalised to sum 1 over the layers: ``{layer: (n,)}``."""
    inv = {k: 1.0 / v.flatten(1).pow(2).sum(1).clamp_min(1e-12) for k, v in targets.items()}
    total = sum(inv.values())
    return {k: v / total for k, v in inv.items()}


def feature_loss(feats: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                 weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image loss ``(n,)``: ``sum_l w_l ||f_l - d_l||^2``."""
    return sum(weights[k] * (feats[k].flatten(1) - targets[k].flatten(1)).pow(2).sum(1) for k in targets)


def invert(featnet: FeatureNet, targets: dict[str, torch.Tensor], variables: list[torch.Tensor], render,
           iterations: int, lr: tuple[float, float], momentum: float, clamp: bool,
           desc: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Optimise ``variables`` (tensors of one batch of images, changed in place) so that the features of
    ``render(variables)`` (images ``(n, 3, S, S)`` in [0, 1]) match ``targets``.

    Returns the final images and the per-image loss at every iteration ``(iterations + 1, n)``
    (the first row before any step). ``desc`` shows a progress bar.
    """
    weights = layer_weights(targets)
    velocity = [torch.zeros_like(v) for v in variables]
    history = []
    for it in tqdm(range(iterations + 1), desc=desc, unit="step", leave=False, disable=desc is None):
        for v in variables:
            v.requires_grad_(True)
        images = render(variables)
        loss = feature_loss({k: f for k, f in featnet(images).items() if k in targets}, targets, weights)
        history.append(loss.detach().cpu().numpy())
        if it == iterations:
            break
        grads = torch.autograd.grad(loss.sum(), variables)
        step = lr[0] + (lr[1] - lr[0]) * it / max(iterations - 1, 1)
        with torch.no_grad():
            for v, g, vel in zip(variables, grads, velocity):
                scale = g.flatten(1).abs().mean(1).clamp_min(1e-12).view(-1, *[1] * (g.ndim - 1))
                vel.mul_(momentum).add_(g / scale, alpha=-step)  # each image's gradient normalised on its own
                v.add_(vel)
                if clamp:
                    v.clamp_(0, 1)
    return images.detach(), np.stack(history)
