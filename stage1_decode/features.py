"""True DNN features of every stimulus, computed once and kept in the feature store."""

from __future__ import annotations

import logging

import numpy as np

from shared.config import Config
from shared.faults import failpoint
from shared.datasets import DataSource, split_image_names, split_images, stimuli_file
from shared.layers import is_pixels
from shared.store import ExperimentStore, StoreMismatch
from shared.weights import parse_weights

log = logging.getLogger(__name__)

def _is_current(store: ExperimentStore, layer: str, split: str, names: list[str]) -> bool:
    """A stored array exists with this config's attributes and exactly these stimuli."""
    if not store.true_file(layer, split).is_file():
        return False
    try:
        store.open_true(layer, split, names=names).close()
        return True
    except StoreMismatch as exc:
        log.info("recomputing %s %s: %s", layer, split, exc)
        return False


def stimulus_channels(src: DataSource, size: int) -> int:
    """1 when every training stimulus is gray (equal channels), else 3: the channels of a ``pixels<N>`` layer,
    decided by the same test stage 2 uses for its generator's channels (``evaluation.is_grayscale``)."""
    from shared.evaluation import is_grayscale

    names = split_image_names(src, "train")
    bs = 256
    for start in range(0, len(names), bs):
        if not is_grayscale(split_images(src, "train", names[start:start + bs], size)):
            return 3
    return 1


def compute_true_features(cfg: Config, store: ExperimentStore, device, splits: list[str]) -> None:
    """Write ``true/<net>/<layer>/<split>.h5`` for every layer and split not yet stored."""
    from contextlib import ExitStack

    import torch
    from tqdm import tqdm

    from shared.featnet import FeatureNet

    spec = parse_weights(cfg.features.weights)
    src = DataSource.of(cfg)
    net = None
    for split in splits:
        names = split_image_names(src, split)
        todo = [layer for layer in cfg.features.layers if not _is_current(store, layer, split, names)]
        if not todo:
            log.info("true features of %s: already in the store", split)
            continue
        folder = stimuli_file(src, split, names)  # fails early, naming the first missing image
        if net is None:
            channels = stimulus_channels(src, cfg.features.input_size) if any(map(is_pixels, cfg.features.layers)) \
                else 3
            net = FeatureNet(cfg.features.network, spec, cfg.features.layers, cfg.features.input_size,
                             pixel_channels=channels).to(device)
            shapes = net.unit_shapes()
        bs = cfg.features.batch_size
        with ExitStack() as stack, torch.no_grad():
            writers = {layer: stack.enter_context(store.writer(
                store.true_file(layer, split), names, int(np.prod(shapes[layer])),
                {**store.true_expect(layer, split), "unit_shape": list(shapes[layer]),
                 "weights_label": spec.label, "provenance": {"images": str(folder)}})) for layer in todo}
            for start in tqdm(range(0, len(names), bs), desc=f"features {split}", unit="batch"):
                imgs = split_images(src, split, names[start:start + bs], cfg.features.input_size)
                feats = net(torch.from_numpy(imgs).to(device))
                for layer in todo:
                    writers[layer].write_rows(start, feats[layer].flatten(1).float().cpu().numpy())
                failpoint("features.batch")
        log.info("true features of %s: %d images, layers %s", split, len(names), todo)
