"""A comparison: a declarative matrix of variants over a base experiment config.

A compare file is YAML::

    name: layers                  # results go to results/compare/<name>/ (default: the file's stem)
    base: ../demo.yaml            # the experiment config every variant starts from (relative to this file)
    set:                          # optional: dotted keys applied to every variant
      generator.iterations: 300
    variants:                     # name -> dotted config keys that variant changes ({} = the base)
      low: {generator.condition_layers: [conv2_2]}
      several: {}
    matrix:                       # optional: every variant crossed with these values
      seed: [0, 1]
    reference: several            # optional: the variant others are tested against (default: the first)
    seeds: 3                      # optional: generator seeds per variant: N (seeds 0..N-1) or a list, e.g.
                                  # [0, 1, 2]; `--seeds N` overrides it (default: one run, the config's own)
    method: wgan_gp               # optional: the method compared across variants
    also: [inversion_dgn]         # optional: other methods of each variant (methods.run), shown beside
                                  # `method` and paired against it within the same variant
    slurm:                        # optional: each job's resources under `compare --launcher slurm`
      partition: gpu              # (flags --partition, --time, --gpus, --mem, --cpus override these)
      time: 02:00:00              # minutes (120) or [D-]HH:MM:SS
      gpus: 1
      mem: 32G
      cpus: 8
      extra: {account: mylab}     # other sbatch options, as --account=mylab

Every variant is resolved and validated like any config (``shared.config.load_config``), so a
misspelt key is refused before anything runs, with the variant's name in the message.
Command-line ``--set`` overrides apply to every variant, last.

``seeds`` makes each variant several runs, one per seed: a seed sets ``generator.seed``, which seeds
every trained method of stage 2 (the generator, ``end_to_end``, the image coders' initialisation and
batches); the experiment's ``seed`` stays, since it fixes the stimuli, the validation hold-out and
stage 1's folds, so every seed of a variant shares one stage 1. Each (variant, seed) is its own cached
result; ``spec.variants`` lists the runs (``Variant.name`` ``"<variant> (seed <s>)"`` with several
seeds, the variant's name alone with one), ``Variant.row`` the table row they are averaged into.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.config import BLENDS, GENERATOR_ROWS, METHODS, PUBLISHED, Config, load_config, read_yaml
from shared.errors import UserError

KEYS = ("name", "base", "set", "variants", "matrix", "reference", "method", "also", "seeds", "slurm")
SEED_KEY = "generator.seed"  # what a seed of `seeds` sets
SLURM_KEYS = ("partition", "time", "gpus", "mem", "cpus", "extra")
DEFAULT_METHOD = GENERATOR_ROWS[0]  # the WGAN-GP generator


@dataclass
class Variant:
    """One run of a comparison: a variant (with its matrix values) at one generator seed."""

    name: str  # unique per run: the row's name, with " (seed <s>)" when the comparison has several seeds
    changes: dict[str, Any]  # the dotted keys this variant sets (beyond the compare's `set`)
    cfg: Config
    base: str = ""  # its name in `variants` (without the matrix values)
    combo: dict[str, Any] = field(default_factory=dict)  # its values of the `matrix` keys
    row: str = ""  # the table row its seeds are averaged into (default: name)
    seed: int | None = None  # its generator.seed (default: the config's)

    def __post_init__(self):
        self.row = self.row or self.name
        if self.seed is None:
            self.seed = self.cfg.generator.seed


@dataclass
class CompareSpec:
    name: str
    path: Path
    base: Path
    variants: list[Variant]
    reference: str
    method: str = DEFAULT_METHOD
    shared_changes: dict[str, Any] = field(default_factory=dict)
    also: list[str] = field(default_factory=list)  # other methods shown and paired against `method`
    slurm: dict[str, Any] = field(default_factory=dict)  # the `slurm` mapping, checked (slurm_settings)
    seeds: list[int] = field(default_factory=list)  # `seeds` / --seeds; [] = one run per variant, its own seed

    def variant(self, name: str) -> Variant:
        """The run named ``name``, or the first run (seed) of the row ``name``."""
        run = next((v for v in self.variants if v.name == name), None)
        return run or next(v for v in self.variants if v.row == name)

    def rows(self) -> list[str]:
        """The table rows (variants with their matrix values), in order."""
        return list(dict.fromkeys(v.row for v in self.variants))

    def reference_for(self, v: Variant) -> Variant | None:
        """The reference variant's first run with the same matrix values as ``v`` (None if it is not run)."""
        base = self.variant(self.reference).base
        return next((x for x in self.variants if x.base == base and x.combo == v.combo), None)


def is_compare_file(path: str | Path) -> bool:
    """True when ``path`` is a compare file (a YAML mapping with ``variants``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "variants" in raw


def _flatten(changes: Any, where: str) -> dict[str, Any]:
    if changes is None:
        return {}
    if not isinstance(changes, dict):
        raise UserError(f"{where} must be a mapping of config keys to values, e.g. {{generator.loss_pixel: 0}}; "
                        f"got {changes!r}")
    return {str(k): v for k, v in changes.items()}


def _label(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    return str(value)


def parse_seeds(value: Any, name: str) -> list[int]:
    """``seeds``: a count N (seeds 0..N-1) or a list of distinct whole numbers >= 0; one line naming
    ``name`` otherwise."""
    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if whole(value) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(whole(x) for x in value) and len(set(value)) == len(value):
        return list(value)
    raise UserError(f"{name} is {value!r}; give the number of generator seeds (e.g. 3: seeds 0, 1, 2) or a list "
                    f"of distinct whole numbers (e.g. [0, 1, 2])")


def _check_seed_free(changes: dict[str, Any], where: str, seeds_from: str) -> None:
    if SEED_KEY in changes:
        raise UserError(f"{where} sets {SEED_KEY}, which {seeds_from} sets for each run; remove one of them")


def load_compare(path: str | Path, overrides: list[str] | tuple[str, ...] = (), base: str | Path | None = None,
                 seeds: int | None = None) -> CompareSpec:
    """Read and validate a compare file; every variant's config is resolved. ``base`` (``--base``) runs
    the comparison over another experiment config (e.g. your own data) instead of the file's; its
    results are then named ``<name>_<base file's stem>``. ``seeds`` (``--seeds N``): run seeds 0..N-1
    of every variant, over the file's ``seeds``."""
    path = Path(path)
    raw = read_yaml(path, "compare file")
    if "variants" not in raw:
        raise UserError(f"'{path}' is not a compare file (it has no 'variants' mapping); see configs/ablations/")
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise UserError(f"compare file '{path}' has unknown key '{unknown[0]}'; valid keys: {', '.join(KEYS)}")
    if not raw.get("base"):
        raise UserError(f"compare file '{path}' needs 'base': the experiment config the variants start from")
    own_base = base is None
    base = (path.parent / str(raw["base"])).resolve() if own_base else Path(base).resolve()
    try:
        base = base.relative_to(Path.cwd())
    except ValueError:
        pass
    if not base.is_file():
        raise UserError(f"compare file '{path}': base config '{base}' does not exist" if own_base else
                        f"--base config '{base}' does not exist; pass an experiment YAML file")
    shared_changes = _flatten(raw.get("set"), f"'set' in {path}")
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise UserError(f"'variants' in {path} must map each variant's name to the config keys it changes")
    matrix = _flatten(raw.get("matrix"), f"'matrix' in {path}")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"'matrix.{key}' in {path} must be a non-empty list of values")
    combos = [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())] if matrix else [{}]
    if seeds is not None:
        seed_list, seeds_from = parse_seeds(seeds, "--seeds"), "--seeds"
    elif raw.get("seeds") is not None:
        seed_list, seeds_from = parse_seeds(raw["seeds"], f"'seeds' in {path}"), f"'seeds' in {path}"
    else:
        seed_list, seeds_from = [], ""
    if seed_list:  # a seed sets generator.seed; nothing else may set it too
        _check_seed_free(shared_changes, f"'set' in {path}", seeds_from)
        _check_seed_free(matrix, f"'matrix' in {path}", seeds_from)
        _check_seed_free({item.partition("=")[0].strip(): None for item in overrides}, "--set", seeds_from)

    variants: list[Variant] = []
    for vname, vchanges in variants_raw.items():
        if isinstance(vname, bool):  # YAML reads a bare true/false key as a boolean
            vname = "true" if vname else "false"
        changes = _flatten(vchanges, f"variant '{vname}' in {path}")
        if seed_list:
            _check_seed_free(changes, f"variant '{vname}' in {path}", seeds_from)
        for combo in combos:
            row = str(vname) + "".join(f" {k.rsplit('.', 1)[-1]}={_label(v)}" for k, v in combo.items())
            merged = {**changes, **combo}
            for seed in seed_list or [None]:
                name = row if seed is None or len(seed_list) == 1 else f"{row} (seed {seed})"
                values = {**shared_changes, **merged, **({SEED_KEY: seed} if seed is not None else {})}
                try:
                    cfg = load_config(base, overrides, values=values)
                except UserError as exc:
                    raise UserError(f"variant '{name}' of {path}: {exc}") from None
                variants.append(Variant(name, merged, cfg, base=str(vname), combo=combo, row=row, seed=seed))
    names = list(dict.fromkeys(v.row for v in variants))
    reference = str(raw.get("reference") or names[0])
    if reference not in names:
        close = [n for n in names if n.startswith(reference + " ")]
        if not close:
            raise UserError(f"'reference' in {path} is {reference!r}, which is not a variant; variants: "
                            f"{', '.join(names)}")
        reference = close[0]
    method = str(raw.get("method") or DEFAULT_METHOD)
    if method not in METHODS:
        raise UserError(f"'method' in {path} is {method!r}; it must be one of {', '.join(METHODS)}")
    also = raw.get("also") or []
    if not isinstance(also, list) or any(str(a) not in METHODS or str(a) == method for a in also):
        raise UserError(f"'also' in {path} must list other methods than 'method' ({method}), among "
                        f"{', '.join(METHODS)}; {also!r} was given")
    for a in also:
        missing = [v.name for v in variants if a in PUBLISHED and a not in v.cfg.methods.run]
        if missing:
            raise UserError(f"'also' in {path} names {a!r}, which variant {missing[0]!r} does not run; add it to "
                            f"methods.run (e.g. in 'set')")
    for m in (method, *also):
        off = [v.name for v in variants if m in BLENDS and not v.cfg.eval.blend]
        if off:
            raise UserError(f"{path} compares {m!r}, which variant {off[0]!r} does not run; set eval.blend: true "
                            f"(e.g. in 'set')")
        bare = [v.name for v in variants if m in BLENDS and v.cfg.eval.validation_fraction == 0]
        if bare:
            raise UserError(f"{path} compares {m!r}, which chooses its weight on the validation hold-out, but variant "
                            f"{bare[0]!r} holds none out (eval.validation_fraction: 0): it would repeat wgan_gp")
    slurm = slurm_settings(raw.get("slurm"), f"in {path}", _raw_time(path)) if raw.get("slurm") is not None else {}
    name = str(raw.get("name") or path.stem) + ("" if own_base else f"_{base.stem}")
    return CompareSpec(name=name, path=path, base=base, variants=variants,
                       reference=reference, method=method, shared_changes=shared_changes,
                       also=[str(a) for a in also], slurm=slurm, seeds=seed_list)


# ------------------------------------------------------------------ the cluster's settings (compare --launcher slurm)


def _raw_time(path: Path) -> str | None:
    """``slurm.time`` as written in the compare file: YAML reads an unquoted ``2:00:00`` as the number 7200."""
    try:
        node = yaml.compose(path.read_text())
    except yaml.YAMLError:
        return None
    for key in ("slurm", "time"):
        if not isinstance(node, yaml.MappingNode):
            return None
        found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        if not found:
            return None
        node = found[-1]
    return node.value if isinstance(node, yaml.ScalarNode) else None


def parse_time(value: Any, name: str) -> int:
    """A time limit in whole minutes from minutes (``90``) or ``[D-]HH:MM:SS`` (``01:30:00``, ``1-00:00:00``)."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", text)
    if text.isdigit() and not isinstance(value, bool):
        minutes = int(text)
    elif m:
        days, hours, mins, secs = (int(x or 0) for x in m.groups())
        minutes = days * 1440 + hours * 60 + mins + (secs > 0)  # seconds round up to a whole minute
    else:
        minutes = 0
    if minutes < 1 or (m and (int(m.group(3)) > 59 or int(m.group(4)) > 59)):
        raise UserError(f"{name} is {value!r}; give the time limit in minutes (e.g. 90) or as HH:MM:SS (e.g. 01:30:00)")
    return minutes


def parse_mem(value: Any, name: str) -> float:
    """Memory in GB from ``32G``, ``500M``, ``1T`` (``GB``, ``MB``, ``TB`` too)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT])B?", str(value).strip(), re.IGNORECASE)
    gb = float(m.group(1)) * {"K": 2 ** -20, "M": 2 ** -10, "G": 1, "T": 2 ** 10}[m.group(2).upper()] if m else 0
    if gb < 2 ** -10:  # under 1 MB submitit would ask for --mem=0, which SLURM reads as the whole node
        raise UserError(f"{name} is {value!r}; give the memory per job with its unit, e.g. 32G or 500M (at least 1M)")
    return gb


def parse_count(value: Any, name: str, least: int) -> int:
    """A whole number of at least ``least`` (GPUs, CPUs)."""
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value).strip()) < least:
        raise UserError(f"{name} is {value!r}; it must be a whole number, at least {least}")
    return int(str(value).strip())


def slurm_settings(raw: Any, where: str, raw_time: str | None = None) -> dict[str, Any]:
    """The ``slurm`` mapping of a compare file, checked and converted: ``partition`` (str), ``time_min`` (int),
    ``gpus`` (int), ``mem_gb`` (float), ``cpus`` (int), ``extra`` (sbatch option -> value); one-line errors
    naming the key. ``raw_time``: ``time`` as written (an unquoted HH:MM:SS reads as a number in YAML)."""
    if not isinstance(raw, dict):
        raise UserError(f"'slurm' {where} must be a mapping, e.g. {{partition: gpu, time: 120, gpus: 1}}; got {raw!r}")
    unknown = [k for k in raw if k not in SLURM_KEYS]
    if unknown:
        raise UserError(f"'slurm' {where} has unknown key '{unknown[0]}'; valid keys: {', '.join(SLURM_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"'slurm.{key}' {where}"
        if value is None:
            continue
        if key == "partition":
            if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
                raise UserError(f"{name} is {value!r}; give a partition's name, e.g. gpu")
            out["partition"] = value.strip()
        elif key == "time":
            out["time_min"] = parse_time(raw_time if raw_time is not None and isinstance(value, int) else value, name)
        elif key == "gpus":
            out["gpus"] = parse_count(value, name, 0)
        elif key == "mem":
            out["mem_gb"] = parse_mem(value, name)
        elif key == "cpus":
            out["cpus"] = parse_count(value, name, 1)
        else:
            if not isinstance(value, dict) or any(not isinstance(v, (str, int)) or isinstance(v, bool)
                                                  for v in value.values()):
                raise UserError(f"{name} must map sbatch options to values, e.g. {{account: mylab, qos: high}}; "
                                f"got {value!r}")
            out["extra"] = {str(k).replace("-", "_"): v for k, v in value.items()}
    return out
