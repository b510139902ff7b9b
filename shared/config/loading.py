"""Reading a config: YAML file, compare-variant values and ``--set`` overrides into a ``Config``.

Loading merges, in order: the dataclass defaults (``schema.py``), the YAML file, then ``--set
key.sub=value`` overrides, and validates the result (``checks.py``). Unknown keys and values of the
wrong type are ``UserError``s that name the key (and suggest the closest valid one).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from shared.config.checks import validate
from shared.config.schema import Config, SplitFiles
from shared.errors import UserError


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (YAML), apply ``values`` (``{dotted key: value}``, e.g. a compare variant),
    then ``key=value`` overrides; validate and return a ``Config``."""
    raw: dict[str, Any] = read_yaml(path, "config file") if path is not None else {}
    for key, value in (values or {}).items():
        _set_dotted(raw, str(key), value)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value (e.g. generator.iterations=100); '{item}' was given")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key.strip(), value)
    cfg = _build(Config, raw, "")
    if cfg.reads_matrix:  # one file holds one training and one test split
        cfg.data.test = {"test": SplitFiles(bdata="-", image_list="-", images="-")}
    validate(cfg)
    return cfg


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in YAML file ``path``; ``what`` names it in the one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist; pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{what} '{path}'{where} is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax "
                        f"there (indentation, brackets, a ':' after each key)") from None
    if not isinstance(raw, dict):
        raise UserError(f"{what} '{path}' must hold a mapping of keys at the top level")
    return raw


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _suggest(key: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(choices))}"


def _build(cls: type, raw: Any, prefix: str, base: Any = None) -> Any:
    """A ``cls`` instance: ``base`` (or the class defaults) with the keys of ``raw`` merged in."""
    import copy

    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise UserError(f"config key '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise UserError(f"unknown config key '{prefix}{key}'{_suggest(str(key), names, prefix)}")
    out = copy.deepcopy(base) if base is not None else cls()
    for name in names:
        if name in raw:
            setattr(out, name, _coerce(hints[name], raw[name], f"{prefix}{name}", getattr(out, name)))
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str, current: Any = None) -> Any:
    """``value`` checked against type ``tp``; mappings merge into ``current`` (the default)."""
    _FIX = "; correct it in the config file or its --set option"  # noqa: N806
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", current)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}{_FIX}")
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}{_FIX}")
        merged = dict(current or {})
        for k, v in value.items():
            merged[str(k)] = _coerce(val_tp, v, f"{key}.{k}", (current or {}).get(str(k)))
        return merged
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; a person means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{key}' must be a number, got {value!r}{_FIX}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}{_FIX}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false, got {value!r}{_FIX}")
        return value
    if tp is str:
        if isinstance(value, bool):  # YAML reads a bare true/false as a boolean
            return "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise UserError(f"config key '{key}' must be a string, got {value!r}{_FIX}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in the schema, not user error


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data (for YAML dumps and hashing)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
