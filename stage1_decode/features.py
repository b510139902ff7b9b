"""True DNN features of every stimulus, computed once and kept in the feature store."""

from __future__ import annotations

import logging

import numpy as np

from shared.config import Config
from shared.datasets import image_paths, load_images, split_files, split_image_names
from shared.store import ExperimentStore
from shared.weights import parse_weights

log = logging.getLogger(__name__)

def compute_true_features(cfg: Config, store: ExperimentStore, device, splits: list[str]) -> None:
    """Write ``true/<net>/<layer>/<split>.h5`` for every layer and split not yet stored."""
    from tqdm import tqdm

    from shared.featnet import FeatureNet

    spec = parse_weights(cfg.features.weights)
    net = None
    for split in splits:
        paths = {layer: store.true_file(layer, split) for layer in cfg.features.layers}
        todo = [layer for layer, p in paths.items() if not p.is_file()]
        if not todo:
            log.info("true features of %s: already in the store", split)
            continue
        names = split_image_names(cfg, split)
        folder = cfg.data_root / split_files(cfg, split).images
        image_paths(folder, names)  # fail early, naming the first missing image
        if net is None:
            net = FeatureNet(cfg.features.network, spec, cfg.features.layers, cfg.features.input_size).to(device)
        shapes = net.unit_shapes()
        writers = {
            layer: store.writer(paths[layer], names, int(np.prod(shapes[layer])), {
                **store.true_expect(layer, split), "unit_shape": list(shapes[layer]),
                "weights_label": spec.label, "provenance": {"images": str(folder)},
            })
            for layer in todo
        }
        try:
            bs = cfg.features.batch_size
            import torch

            with torch.no_grad():
                for start in tqdm(range(0, len(names), bs), desc=f"features {split}", unit="batch"):
                    imgs = load_images(folder, names[start:start + bs], cfg.features.input_size)
                    feats = net(torch.from_numpy(imgs).to(device))
                    for layer in todo:
                        writers[layer].write_rows(start, feats[layer].flatten(1).float().cpu().numpy())
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        for w in writers.values():
            w.commit()
        log.info("true features of %s: %d images, layers %s", split, len(names), todo)
