"""The shape of the house: method names live in the registry and the schema, data flows one way
(stages import ``shared``, never each other; ``shared`` never imports a stage), and no file outgrows
one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT
from shared.config import METHODS

PACKAGES = ("shared", "stage1_decode", "stage2_generate", "bench", "tools")
# the registry, the schema tuple, and the docs generator (the docs' tables name the rows they show)
NAME_HOMES = {"stage2_generate/methods/__init__.py", "shared/config/schema.py", "tools/doc_blocks.py",
              "tools/doc_lowlevel.py", "tools/doc_blend.py", "tools/doc_ablations.py"}
LONG_ALLOWED = {"shared/config/schema.py"}
MAX_LINES = 400


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _method_literals(path: Path) -> list[str]:
    """``line: 'name'`` of every string constant in ``path`` that is exactly a method name."""
    return [f"{node.lineno}: {node.value!r}" for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in METHODS]


def test_method_names_are_literals_only_in_the_registry_and_the_schema():
    found = [f"{_rel(path)}:{hit}" for path in _sources(*PACKAGES) if _rel(path) not in NAME_HOMES
             for hit in _method_literals(path)]
    assert not found, "method names spelt outside the registry and the schema: " + "; ".join(found)


def _imported(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package, forbidden", [("shared", {"stage1_decode", "stage2_generate"}),
                                                ("stage1_decode", {"stage2_generate"}),
                                                ("stage2_generate", {"stage1_decode"})])
def test_no_module_imports_from_a_higher_layer_or_the_other_stage(package, forbidden):
    bad = [f"{_rel(p)} imports {sorted(_imported(p) & forbidden)}" for p in _sources(package)
           if _imported(p) & forbidden]
    assert not bad, "; ".join(bad)


def test_no_python_file_but_the_config_schema_is_over_400_lines():
    long = [f"{_rel(p)}: {n} lines" for p in _sources(*PACKAGES, "tests")
            if (n := len(p.read_text().splitlines())) > MAX_LINES and _rel(p) not in LONG_ALLOWED]
    assert not long, "; ".join(long)


def test_the_checks_would_catch_what_they_look_for(tmp_path):
    """The literal and import checks on a file that breaks both."""
    bad = tmp_path / "bad.py"
    bad.write_text(f'"""A docstring naming {METHODS[2]}."""\nimport stage2_generate\nX = {METHODS[2]!r}\n')
    assert "stage2_generate" in _imported(bad)
    assert _method_literals(bad) == [f"3: {METHODS[2]!r}"]  # the constant, not the docstring


def test_readme_is_a_front_door_whose_where_things_are_table_names_existing_files():
    import re

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert len(rows) >= 10
    for row in rows:
        cell = row.strip("|").split("|")[-1]
        paths = re.findall(r"`([\w./-]+(?:\.py|\.md|/))`", cell)
        assert paths, f"no file named in: {row}"
        missing = [p for p in paths if not (ROOT / p).exists()]
        assert not missing, f"{row}: {missing} do not exist"


def test_licence_and_citation_are_at_the_front_door():
    import configparser

    import yaml

    licence = configparser.ConfigParser()
    licence.read(ROOT / "setup.cfg")
    assert (ROOT / "LICENSE").read_text().startswith(f"{licence['metadata']['license']} License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == licence["metadata"]["license"]
    assert cff["version"] == licence["metadata"]["version"]
    dois = {r.get("doi") for r in cff["references"]}
    assert "10.1371/journal.pcbi.1006633" in dois  # the data's paper (Shen et al. 2019)
    assert all(r.get("title") and r.get("authors") for r in cff["references"])


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere (at the top, in a function, under TYPE_CHECKING)."""
    modules = {_module(p): p for p in _sources(package)}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)  # `from pkg import module`
                found |= subs if len(subs) == len(node.names) else subs | {node.module}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


@pytest.mark.parametrize("package", ["shared", "stage1_decode", "stage2_generate"])
def test_no_import_cycle_within_a_package(package):
    cycle = _cycle(_import_graph(package))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_every_slow_first_test_file_exists():
    """conftest's SLOW_FIRST orders the test files for the two workers: a renamed file would silently run last."""
    from conftest import SLOW_FIRST

    assert all((ROOT / "tests" / name).is_file() for name in SLOW_FIRST), SLOW_FIRST
