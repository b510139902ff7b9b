"""docs/config.md names every key of the config schema, written from the schema by ``make docs``
(``tools/doc_config.py``): a key missing from the reference fails here, a field without a comment saying what
it means fails the builder (and so ``make_docs --check``), and the examples of the hand-written part load."""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from dataclasses import dataclass, field

import pytest

from conftest import ROOT
from shared.config import Config, load_config

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import make_docs  # noqa: E402
from tools.doc_config import config_reference, field_comments, reference, rows  # noqa: E402
from tools.doc_sources import DocError  # noqa: E402

DOC = ROOT / "docs" / "config.md"


def schema_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of dataclass ``cls``, walked on its own (not through the builder); a mapping of name ->
    dataclass (``data.test``) as ``data.test.<...>.<key>``."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        keys.append(key)
        if dataclasses.is_dataclass(tp):
            keys += schema_keys(tp, key + ".")
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            keys += schema_keys(typing.get_args(tp)[1], key + ".<*>.")
    return keys


def test_every_schema_key_is_in_the_reference():
    text = DOC.read_text()
    keys = schema_keys()
    assert len(keys) > 100 and "data.test.<*>.bdata" in keys and "generator.condition_layers" in keys
    named = set(re.findall(r"^\| `([^`]+)` \|", text, re.M))  # each key's row, each section's heading
    named |= set(re.findall(r"^## `(\w+)`$", text, re.M))
    missing = []
    for key in keys:
        pattern = re.escape(key).replace(re.escape("<*>"), r"<\w+>")
        if not any(re.fullmatch(pattern, name) for name in named):
            missing.append(key)
    assert not missing, f"keys missing from docs/config.md (run `make docs`): {missing}"


def test_the_reference_is_what_make_docs_writes():
    text = DOC.read_text()
    rendered, _ = make_docs.render(text, make_docs.Sources())
    assert rendered == text, "docs/config.md differs from the schema: run `make docs`"
    assert config_reference() in text
    assert "| `data.test.<set>.bdata` | `str` | natural: `'{subject}_perceptionNaturalImageTest_original_VC.h5'` |" \
        in text


@dataclass
class _Inner:
    """A made-up section."""

    said: int = 1  # says what it is
    unsaid: str = "x"


@dataclass
class _Outer:
    """A made-up config."""

    name: str = "n"  # a name
    # a comment above a field, alone, is its meaning
    above: float = 0.5
    # a comment above a group of fields
    first: int = 1  # the line's own comment wins
    meta: bool = field(default=False, metadata={"doc": "metadata wins"})  # the line comment, ignored
    inner: _Inner = field(default_factory=_Inner)
    named: dict[str, _Inner] = field(default_factory=lambda: {"a": _Inner(said=2)})  # sections by name


def test_a_field_without_a_description_is_refused():
    with pytest.raises(DocError, match=r"config key 'inner\.unsaid' \(_Inner\.unsaid in .*\) has no description"):
        rows(_Outer, _Outer())
    with pytest.raises(DocError, match=r"config key 'unsaid' .* has no description"):
        reference(_Inner)


def test_meanings_come_from_comments_and_metadata(monkeypatch):
    assert field_comments(_Outer)["above"] == "a comment above a field, alone, is its meaning"
    assert field_comments(_Outer)["first"] == "the line's own comment wins"
    assert field_comments(_Inner) == {"said": "says what it is", "unsaid": ""}
    monkeypatch.setitem(field_comments(_Inner), "unsaid", "now said")
    table = {r[0]: r for r in rows(_Outer, _Outer())}
    assert table["`meta`"][3] == "metadata wins"
    assert table["`inner`"][3] == "A made-up section."  # a section without a comment: its class's docstring
    assert table["`inner.unsaid`"][1:] == ["`str`", "`x`", "now said"]
    assert table["`named`"][1:3] == ["mapping: name → mapping (`named.<name>.*`)", "`a`"]
    assert table["`named.<name>.said`"][2] == "a: `2`"  # each default entry's value


def test_the_examples_of_the_reference_load(tmp_path):
    """The YAML file and every ``--set key.sub=value`` of the hand-written part, together."""
    text = DOC.read_text()
    example = tmp_path / "example.yaml"
    example.write_text(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    sets = re.findall(r"--set (\w+\.[^`\s]+)", text)
    assert len(sets) >= 4, sets
    cfg = load_config(example, sets)
    assert cfg.experiment == "my_run" and cfg.data.source == "bdata" and cfg.generator.iterations == 200
    assert cfg.data.rois == ["VC", "LVC", "HVC"] and cfg.data.test["natural"].images == "images/test"
