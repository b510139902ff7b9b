"""The compare cache: what each key hashes, and where a variant's cached products live.

Every key is a 12-hex-digit SHA-256 of ``CACHE_VERSION`` and the parts of a variant's resolved
config that differ from the schema's defaults (so a config key added later, with a default,
keeps every existing key valid):

* ``store_key``: what the feature store's content depends on: data (less subjects and ROIs),
  the simulation (simulated data only), the feature network, its weights, input size and
  layers, the decoder's settings (less kind, penalty mode, voxel count and chunking), seed;
* ``stage1_key``: everything stage 1's products depend on: data, features (less batch size),
  decoder (less chunking), seed and the simulation (simulated data only);
* ``result_key``: everything a variant's numbers depend on (both stages): the whole config
  less ``NOT_RESULTS`` (experiment name, folders, device, batch size, chunking, grid columns,
  saved reconstructions, lab and download settings), and the code versions of the methods it runs
  (``method_versions``: each method class's ``version``). ``generator.seed`` is in it, so each seed of
  a variant (``seeds``) is its own result, while its store and stage 1 (which no generator key
  enters) are shared by every seed.

Products live under ``<work_dir>/compare/`` (``variant_paths``):

* ``store-<store_key>/<experiment>/``: the feature store and generator checkpoints, shared by
  variants with the same store key; ``stage1-<stage1_key>.json`` there marks a finished stage 1;
* ``results/<result_key>/<experiment>/``: a variant's results; ``done.json`` there marks a
  finished variant, reused by any comparison with the same key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from shared.config import Config, to_dict

# Keys that change where things go, how fast, or how they look, never what is computed.
NOT_RESULTS = {("experiment",), ("results_dir",), ("work_dir",), ("device",), ("features", "batch_size"),
               ("decoder", "chunk_units"), ("decoder", "part_units"), ("eval", "grid_columns"),
               ("eval", "save_reconstructions"), ("lab",), ("download",)}


# Bump when a code change alters what an unchanged config computes, to retire every cached product.
# 2: the generator starts at the mean image, a validation hold-out, native-size scores
# 3: seeds as an axis; the validation hold-out kept out of stage 1 (decoded like a test split)
CACHE_VERSION = 3


def method_versions(cfg: Config) -> dict[str, int]:
    """The code versions of the methods ``cfg`` runs (``methods.run``) that have been bumped past 1 (each method
    class's ``version``): only the results of configs that run a bumped method are retired. A config that runs no
    published method never imports the registry (nor torch: a cached compare of it stays quick)."""
    if not cfg.methods.run:
        return {}
    from stage2_generate.methods import REGISTRY

    return {m: REGISTRY[m].version for m in cfg.methods.run if m in REGISTRY and REGISTRY[m].version > 1}


def _changed(d: Any, default: Any) -> Any:
    """The parts of ``d`` that differ from ``default`` (nested mappings compared key by key)."""
    if isinstance(d, dict) and isinstance(default, dict):
        out = {k: _changed(v, default.get(k)) for k, v in d.items() if k not in default or v != default[k]}
        out.update({k: "<absent>" for k in default if k not in d})  # e.g. a default test set left out
        return out
    return d


def _digest(obj: Any) -> str:
    """Hash of a config fragment, over what differs from the schema's defaults: a new config key added
    with a default later leaves every existing key, and its cached products, valid."""
    return hashlib.sha256(json.dumps([CACHE_VERSION, obj], sort_keys=True, default=str).encode()).hexdigest()[:12]


def _drop(d: dict, paths) -> dict:
    d = copy.deepcopy(d)
    for p in paths:
        node = d
        for part in p[:-1]:
            node = node.get(part, {})
        node.pop(p[-1], None)
    return d


def _store_parts(cfg: Config) -> dict:
    d = to_dict(cfg)
    return {
        "data": {k: v for k, v in d["data"].items() if k not in ("subjects", "rois")},
        "simulation": d["simulation"] if cfg.data.source == "simulated" else None,
        "features": {k: d["features"][k] for k in ("network", "weights", "input_size", "layers")},
        "decoder": {k: v for k, v in d["decoder"].items() if k not in ("kind", "alpha_per", "n_voxels", "chunk_units",
                                                                               "part_units")},
        "seed": cfg.seed,
        # which training images stage 1 holds out of every decoder (added as a key only where it differs from
        # the default, so every existing key stays valid)
        **({"validation_fraction": cfg.eval.validation_fraction}
           if cfg.eval.validation_fraction != Config().eval.validation_fraction else {}),
    }


def store_key(cfg: Config) -> str:
    """What the feature store's content depends on beyond its own paths.

    Subjects, ROIs and the decoder's kind, penalty mode and voxel count each have their own
    files in the store, so variants that differ only in those (or only in stage 2) share one
    store; anything else (data, simulation, feature network and its layers, whose files enter
    every decoded layer's fingerprint, penalties, folds, seed) gets its own.
    """
    return _digest(_changed(_store_parts(cfg), _store_parts(Config())))


def stage1_key(cfg: Config) -> str:
    """Everything stage 1's products depend on."""
    return _digest(_changed(_stage1_parts(cfg), _stage1_parts(Config())))


def _stage1_parts(cfg: Config) -> dict:
    d = to_dict(cfg)
    d["features"].pop("batch_size")
    d["decoder"].pop("chunk_units")
    d["decoder"].pop("part_units")
    return {**{k: d[k] for k in ("data", "features", "decoder", "seed")},
            "simulation": d["simulation"] if cfg.data.source == "simulated" else None,
            **({"validation_fraction": cfg.eval.validation_fraction}  # stage 1 holds these images out
               if cfg.eval.validation_fraction != Config().eval.validation_fraction else {})}


def result_key(cfg: Config) -> str:
    """Everything a variant's numbers depend on (both stages), and the code versions of the methods it runs
    (``method_versions``; none for a config that runs no bumped method, whose key stays as it was)."""
    changed = _changed(_drop(to_dict(cfg), NOT_RESULTS), _drop(to_dict(Config()), NOT_RESULTS))
    versions = method_versions(cfg)
    return _digest({**changed, "method_versions": versions} if versions else changed)


def result_settings(cfg: Config) -> dict[str, Any]:
    """What ``result_key`` hashes, spelt out in full (``{dotted key: value}``, defaults included): kept beside committed
    results, so that a default changed since (which leaves ``result_key``, a hash of the differences from the
    defaults, as it was) is told apart from a key added since (absent from the record)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(_drop(to_dict(cfg), NOT_RESULTS), "")
    return out


# ------------------------------------------------------------------ folders and markers


def variant_paths(cfg: Config) -> tuple[Config, Path, Path]:
    """``(config as run, its store folder, its results folder)`` in the compare cache."""
    cache = Path(cfg.work_dir) / "compare"
    run_cfg = copy.deepcopy(cfg)
    run_cfg.eval.save_reconstructions = True  # the grid and export read them
    run_cfg.work_dir = str(cache / f"store-{store_key(cfg)}")
    run_cfg.results_dir = str(cache / "results" / result_key(cfg))
    return run_cfg, run_cfg.work_path, run_cfg.results_path


def stage1_marker(store_dir: Path, cfg: Config) -> Path:
    """The file that marks stage 1 of ``cfg`` finished in its store folder."""
    return store_dir / f"stage1-{stage1_key(cfg)}.json"


def done_marker(results: Path) -> Path:
    """The file that marks a variant finished (both stages) in its results folder."""
    return results / "done.json"
