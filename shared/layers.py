"""Canonical layer names of the feature networks, mapped to torchvision modules.

Torch-free so that config validation does not import torch. Conv layers are taken
at the convolution's output (before ReLU) and fc layers at the Linear's output, as in
the Kamitani lab's feature files (bdpy's ``vgg19`` layer map).
"""

from __future__ import annotations

from shared.errors import UserError

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
    """``layers`` sorted into forward order."""
    table = LAYERS[network]
    names = list(table)
    return sorted(layers, key=names.index)


def check_layers(key: str, network: str, layers: list[str]) -> None:
    """Raise ``UserError`` naming ``key`` if a layer is unknown for ``network``."""
    table = LAYERS[network]
    if not layers:
        raise UserError(f"'{key}' must list at least one layer of {network}: {list(table)}")
    for layer in layers:
        if layer not in table:
            raise UserError(f"'{key}' entry {layer!r} is not a {network} layer; valid layers: {list(table)}")
    if len(set(layers)) != len(layers):
        raise UserError(f"'{key}' lists a layer twice: {layers}")
