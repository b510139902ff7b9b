"""Canonical layer names of the feature networks, mapped to torchvision modules.

Torch-free so that config validation does not import torch. Conv layers are taken
at the convolution's output (before ReLU) and fc layers at the Linear's output, as in
the Kamitani lab's feature files (bdpy's ``vgg19`` layer map).

Beside a network's layers, ``pixels<N>`` (e.g. ``pixels16``) names the stimulus image itself, area-averaged
to ``N x N`` from the images the feature network sees (``features.input_size``), one channel for a grayscale
stimulus set and three otherwise: the low-level pathway's "layer", decoded like any other (allowed in
``features.layers`` and ``generator.condition_layers``, never in a perceptual or judge network's layers).
"""

from __future__ import annotations

import re

from shared.errors import UserError

_PIXELS = re.compile(r"pixels([1-9][0-9]*)")
PIXEL_SIDES = (4, 512)  # the smallest and largest N of pixels<N>


def pixels_side(layer: str) -> int | None:
    """N of a ``pixels<N>`` layer name, None for any other name."""
    m = _PIXELS.fullmatch(layer)
    return int(m.group(1)) if m else None


def is_pixels(layer: str) -> bool:
    """True for a ``pixels<N>`` layer (the stimulus image at N x N)."""
    return pixels_side(layer) is not None

# name -> (submodule of the torchvision model, index in that nn.Sequential)
VGG19_LAYERS: dict[str, tuple[str, int]] = {
    "conv1_1": ("features", 0), "conv1_2": ("features", 2),
    "conv2_1": ("features", 5), "conv2_2": ("features", 7),
    "conv3_1": ("features", 10), "conv3_2": ("features", 12), "conv3_3": ("features", 14), "conv3_4": ("features", 16),
    "conv4_1": ("features", 19), "conv4_2": ("features", 21), "conv4_3": ("features", 23), "conv4_4": ("features", 25),
    "conv5_1": ("features", 28), "conv5_2": ("features", 30), "conv5_3": ("features", 32), "conv5_4": ("features", 34),
    "fc6": ("classifier", 0), "fc7": ("classifier", 3), "fc8": ("classifier", 6),
}

# bdpy's layer_map('alexnet') does not match torchvision's AlexNet (it indexes another module list),
# so the indices are written out against torchvision's module list here.
ALEXNET_LAYERS: dict[str, tuple[str, int]] = {
    "conv1": ("features", 0), "conv2": ("features", 3), "conv3": ("features", 6),
    "conv4": ("features", 8), "conv5": ("features", 10),
    "fc6": ("classifier", 1), "fc7": ("classifier", 4), "fc8": ("classifier", 6),
}

LAYERS = {"vgg19": VGG19_LAYERS, "alexnet": ALEXNET_LAYERS}


def layer_order(network: str, layers: list[str]) -> list[str]:
    """``layers`` sorted into forward order (``pixels<N>`` layers first, largest N first: the input)."""
    names = list(LAYERS[network])
    return sorted(layers, key=lambda la: (-1, -pixels_side(la)) if is_pixels(la) else (names.index(la), 0))


def check_layers(key: str, network: str, layers: list[str], pixels: bool = False) -> None:
    """Raise ``UserError`` naming ``key`` if a layer is unknown for ``network`` (``pixels``: ``pixels<N>``
    layers are allowed too)."""
    table = LAYERS[network]
    if not layers:
        raise UserError(f"'{key}' must list at least one layer of {network}: {list(table)}")
    for layer in layers:
        side = pixels_side(layer)
        if side is not None and pixels:
            if not PIXEL_SIDES[0] <= side <= PIXEL_SIDES[1]:
                raise UserError(f"'{key}' entry {layer!r}: a pixels layer's side must be {PIXEL_SIDES[0]} to "
                                f"{PIXEL_SIDES[1]}, e.g. pixels16")
            continue
        if layer not in table:
            extra = " or pixels<N> (the stimulus at N x N px, e.g. pixels16)" if pixels else ""
            raise UserError(f"'{key}' entry {layer!r} is not a {network} layer; valid layers: {list(table)}{extra}")
    if len(set(layers)) != len(layers):
        raise UserError(f"'{key}' lists a layer twice: {layers}")
