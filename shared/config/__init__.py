"""Typed experiment configuration: dataclass schemas, YAML loading, ``--set`` overrides.

- ``schema.py``: the dataclasses whose fields mirror the YAML keys (``Config`` nests them all) and
  the tuples of allowed choices (``NETWORKS``, ``METHODS``, ...);
- ``loading.py``: ``load_config`` (defaults, then the YAML file, then ``--set key.sub=value``;
  unknown keys and wrongly typed values are ``UserError``s naming the key), ``read_yaml``,
  ``to_dict``, ``dump_yaml``;
- ``checks.py``: ``validate`` (cross-field checks that types alone cannot make) and
  ``perceptual_weights``.

Everything public is re-exported here: ``from shared.config import Config, load_config``.
"""

from shared.config.checks import judge_users, perceptual_weights, resolve_perceptual_weights, validate
from shared.config.loading import dump_yaml, load_config, read_yaml, to_dict
from shared.config.schema import (
    BASELINES,
    BASELINES_FROM_VOXELS,
    DECODER_BACKENDS,
    DECODER_KINDS,
    BLENDS,
    GENERATOR_ROWS,
    METHODS,
    NETWORKS,
    SIM_STIMULI,
    TRAIN_INPUTS,
    VALIDATION_METRICS,
    PUBLISHED,
    Config,
    DataConfig,
    DecoderConfig,
    DownloadConfig,
    EvalConfig,
    FeaturesConfig,
    GeneratorConfig,
    LabConfig,
    MatrixConfig,
    MethodsConfig,
    SimulationConfig,
    SplitFiles,
)

__all__ = [
    "BASELINES", "BASELINES_FROM_VOXELS", "BLENDS", "DECODER_BACKENDS", "DECODER_KINDS", "GENERATOR_ROWS", "METHODS", "NETWORKS", "PUBLISHED",
    "SIM_STIMULI", "TRAIN_INPUTS", "VALIDATION_METRICS",
    "Config", "DataConfig", "DecoderConfig", "DownloadConfig", "EvalConfig", "FeaturesConfig", "GeneratorConfig",
    "LabConfig", "MatrixConfig", "MethodsConfig", "SimulationConfig", "SplitFiles",
    "dump_yaml", "judge_users", "load_config", "perceptual_weights", "read_yaml", "resolve_perceptual_weights", "to_dict", "validate",
]
