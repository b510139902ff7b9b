"""The committed reference tables (``results/reference/``) are what today's code computes, or listed as not yet.

A comparison's folder holds ``provenance.json`` (``stage2_generate.compare.provenance``): its command and each run's
result key. The test loads the same compare file with the same arguments, recomputes every key and fails when
one differs (a config, a default or the cache version changed since), when a run was added or dropped, or when
a table's result version is older than ``shared.report.RESULT_VERSION``. A run's folder (``make reference``,
``make small-data``) is held to its config the same way through ``metrics.json``'s ``result_key`` and
``result_settings`` (which tell a default changed since); a stage-1-only folder (``demo_unit``) by its version.

``KNOWN_STALE`` names the folders made before this check existed, each with the command that remakes it. It can
only shrink: a listed folder that has become current fails too (take it off the list).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.config import load_config
from shared.report import RESULT_VERSION, read_result_version
from stage2_generate.compare.cache import result_key, result_settings
from stage2_generate.compare.provenance import read_provenance, settings_drift, stale_reasons

from conftest import write_tiny_config

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"

# folder (relative to results/reference/) -> the command that remakes it
KNOWN_STALE = {
    "compare/losses": "make ablations",
    # made before the shipped configs set eval.blend: true (their result keys moved; their tables' rows do not use it)
    "compare/rois": "make ablations", "compare/lowlevel_demo": "make lowlevel",
    # made before the image coders' guard (latent_regression and vae at version 2: their result keys moved)
    "compare/methods": "make ablations",
}

RUN_CONFIGS = {"demo": "configs/demo.yaml", "small_strokes": "configs/small_strokes.yaml",
               "binary_shapes": "configs/binary_shapes.yaml", "demo_unit": None}


def _tables(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.md") if p.name != "README.md")


def _compare_problems(folder: Path) -> list[str]:
    versions = {read_result_version(t) for t in _tables(folder)}
    if versions != {RESULT_VERSION}:
        return [f"tables made at result version(s) {sorted(versions, key=str)}, the code is at {RESULT_VERSION}"]
    record = read_provenance(folder)
    if record is None:
        return ["no provenance.json (copy the folder with python -m tools.keep_compare)"]
    return stale_reasons(record, ROOT)


def _run_problems(name: str) -> list[str]:
    folder = REFERENCE / name
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    versions = {read_result_version(t) for t in _tables(folder)}
    stage1_only = RUN_CONFIGS.get(name) is None  # stage 1 alone (make per-unit): its tables, without a metrics.json
    if versions != {RESULT_VERSION} or (not stage1_only and metrics.get("result_version") != RESULT_VERSION):
        return [f"made at result version(s) {sorted(versions, key=str)}, the code is at {RESULT_VERSION}"]
    if stage1_only:  # its tables' result version is all there is to check
        return []
    if "result_key" not in metrics:
        return ["metrics.json has no result_key"]
    cfg = load_config(ROOT / RUN_CONFIGS[name])
    if metrics["result_key"] != result_key(cfg):
        return [f"its settings changed (result key {metrics['result_key']}, now {result_key(cfg)})"]
    return settings_drift(metrics.get("result_settings", {}), result_settings(cfg))


def _folders() -> list[str]:
    compare = [f"compare/{p.name}" for p in sorted((REFERENCE / "compare").iterdir()) if p.is_dir()]
    runs = [p.name for p in sorted(REFERENCE.iterdir()) if (p / "metrics.json").is_file() or p.name in RUN_CONFIGS]
    return compare + runs


def test_every_reference_folder_is_checked():
    runs = {p.name for p in REFERENCE.iterdir() if p.is_dir() and _tables(p)} - {"bench", "compare"}
    assert runs <= set(RUN_CONFIGS), f"add {sorted(runs - set(RUN_CONFIGS))} to RUN_CONFIGS"
    assert set(KNOWN_STALE) <= set(_folders()), f"KNOWN_STALE names missing folders {set(KNOWN_STALE) - set(_folders())}"


def test_a_remade_comparison_is_read_through_markers():
    """A comparison off KNOWN_STALE (remade from today's code) has its README checked by ``make docs``, so its
    reading quotes the new tables through markers, not the old numbers by hand."""
    from tools.make_docs import HAND_READINGS

    remade = {name for name in HAND_READINGS if f"compare/{name}" not in KNOWN_STALE}
    assert not remade, f"take {sorted(remade)} off tools/make_docs.py's HAND_READINGS and rewrite the reading with markers"


@pytest.mark.parametrize("folder", _folders())
def test_reference_is_what_the_code_computes(folder):
    problems = _compare_problems(REFERENCE / folder) if folder.startswith("compare/") else _run_problems(folder)
    if folder in KNOWN_STALE:
        assert problems, f"results/reference/{folder} is current now: take it off KNOWN_STALE"
    else:
        record = read_provenance(REFERENCE / folder) if folder.startswith("compare/") else None
        remake = record["command"] if record else KNOWN_STALE.get(folder, "the command in its README.md")
        assert not problems, f"results/reference/{folder} is older than the code: {problems[0]}; remake: {remake}"


# --- the check itself, on a comparison made up here ---------------------------------------------------------------

def _fake_compare(tmp: Path) -> tuple[Path, dict]:
    """A compare file over the tiny config and a provenance record as `compare` would write it."""
    from types import SimpleNamespace

    from stage2_generate.compare.provenance import provenance
    from stage2_generate.compare.spec import load_compare

    (tmp / "configs").mkdir()
    write_tiny_config(tmp / "configs", Path("data"))
    (tmp / "configs" / "cmp.yaml").write_text(
        "name: cmp\nbase: tiny.yaml\nseeds: 2\nvariants:\n  a: {}\n  b: {generator.iterations: 7}\n")
    here = Path.cwd()
    try:
        os.chdir(tmp)
        spec = load_compare("configs/cmp.yaml")
        args = SimpleNamespace(base=None, overrides=[], seeds=None, jobs=2)
        return tmp / "configs" / "cmp.yaml", provenance(spec, args, spec.variants)
    finally:
        os.chdir(here)


def test_provenance_records_every_run_and_the_command(tmp_path):
    _, record = _fake_compare(tmp_path)
    assert sorted(record["results"]) == ["a (seed 0)", "a (seed 1)", "b (seed 0)", "b (seed 1)"]
    assert record["command"] == "python -m stage2_generate compare --config configs/cmp.yaml --jobs 2"
    assert len(set(record["results"].values())) == 4  # each seed its own result
    assert stale_reasons(record, tmp_path) == []


def test_a_changed_setting_makes_the_tables_stale(tmp_path):
    path, record = _fake_compare(tmp_path)
    path.write_text(path.read_text().replace("iterations: 7", "iterations: 8"))
    reasons = stale_reasons(record, tmp_path)
    assert len(reasons) == 2 and all("'b (seed" in r and "settings changed" in r for r in reasons)


def test_a_changed_default_or_a_new_variant_makes_the_tables_stale(tmp_path):
    path, record = _fake_compare(tmp_path)
    base = tmp_path / "configs" / "tiny.yaml"
    cfg = load_config(base)
    base.write_text(base.read_text().replace(f"seed: {cfg.seed}\n", f"seed: {cfg.seed + 1}\n", 1))
    assert len(stale_reasons(record, tmp_path)) == 4  # the experiment's seed enters every run
    write_tiny_config(tmp_path / "configs", Path("data"))
    path.write_text(path.read_text() + "  c: {generator.iterations: 9}\n")
    assert stale_reasons(record, tmp_path) == ["run 'c (seed 0)' is in the compare file but not in the tables",
                                               "run 'c (seed 1)' is in the compare file but not in the tables"]


def test_a_changed_schema_default_makes_the_tables_stale(tmp_path, monkeypatch):
    _, record = _fake_compare(tmp_path)
    import shared.config.schema as schema

    old = schema.EvalConfig.__dataclass_fields__["validation_fraction"].default
    monkeypatch.setattr(schema.EvalConfig.__dataclass_fields__["validation_fraction"], "default", old + 0.15)
    monkeypatch.setattr(schema.EvalConfig.__init__, "__defaults__", tuple(
        old + 0.15 if d == old else d for d in schema.EvalConfig.__init__.__defaults__))
    reasons = stale_reasons(record, tmp_path)
    assert len(reasons) == 4 and all(f"eval.validation_fraction was {old!r}, now" in r for r in reasons)


def test_a_setting_added_since_leaves_the_tables_current():
    made = {"a.b": 1, "a.c": [1, 2]}
    assert settings_drift(made, {**made, "a.new": 0}) == []
    assert settings_drift(made, {"a.b": 2, "a.c": [1, 2]}) == ["a.b was 1, now 2"]
    assert settings_drift(made, {"a.b": 1}) == ["a.c is no longer a setting"]


def test_a_compare_file_that_no_longer_loads_is_stale_not_an_error(tmp_path):
    path, record = _fake_compare(tmp_path)
    path.write_text(path.read_text().replace("iterations: 7", "iterationz: 7"))
    reasons = stale_reasons(record, tmp_path)
    assert len(reasons) == 1 and "no longer loads" in reasons[0] and "iterationz" in reasons[0]


def test_a_raised_version_makes_the_tables_stale(tmp_path, monkeypatch):
    _, record = _fake_compare(tmp_path)
    import stage2_generate.compare.cache as cache

    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    reasons = stale_reasons(record, tmp_path)
    assert reasons[0].startswith("made at cache version") and len(reasons) == 5  # and every key moved with it
