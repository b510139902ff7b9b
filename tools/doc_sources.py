"""The committed outputs the generated docs read (``results/reference/``): each file read once, a marker's
reference ``FILE:SELECTOR`` resolved to its value, and the result version each file was made by
(``tools/make_docs.py`` says the syntax)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from shared.report import RESULT_VERSION, markdown_table, read_result_version

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"
# how to remake the outputs of a folder under results/reference/ (first match)
REMAKE = [("compare/settings_", "make settings"), ("compare/headline", "make seeds"),
          ("compare/lowlevel_", "make lowlevel"), ("compare/blend_", "make blend"), ("compare/", "make ablations"),
          ("demo_unit/", "make per-unit"), ("demo/", "make demo, then make reference"),
          ("small_strokes/", "make small-data, then make reference"),
          ("binary_shapes/", "make small-data, then make reference")]


def md_table(header: list[str], rows: list[list], align: str = " --- ") -> str:
    """A generated document's Markdown table: ``header`` and rows of cells (``shared.report.markdown_table``'s
    format, the one every result table has); ``align`` for every column but the first (e.g. `` ---: ``)."""
    lines = markdown_table([dict(zip(header, r)) for r in rows], header).split("\n")
    lines[1] = "|" + "|".join([" --- "] + [align] * (len(header) - 1)) + "|"
    return "\n".join(lines)


class DocError(Exception):
    """A marker that cannot be resolved: names the marker and what is wrong."""


def _number(text):
    """A cell or value as a number where it reads as one; anything else as it is (strings stripped)."""
    if not isinstance(text, str):
        return text
    s = str(text).strip().replace(",", "")
    try:
        return int(s) if re.fullmatch(r"[-+]?\d+", s) else float(s)
    except ValueError:
        return str(text).strip()


def _parse_table(text: str) -> list[dict]:
    """The first Markdown table of ``text`` as rows of ``{column: cell}``."""
    lines = [line for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return []
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in
             lines[start:start + next((i for i, line in enumerate(lines[start:]) if not line.startswith("|")),
                                      len(lines) - start)]]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def _split_selector(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "." and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def _pick(rows, condition: str, ref: str):
    if re.fullmatch(r"-?\d+", condition):
        return rows[int(condition)]
    # a comma starts the next condition only before its `key=` (values such as "dense, layer penalty" hold commas)
    want = dict(c.split("=", 1) for c in re.split(r",(?=[\w.]+=)", condition))
    hits = [r for r in rows if all(str(r.get(k, "")).strip() == v for k, v in want.items())]
    if len(hits) != 1:
        raise DocError(f"{ref}: [{condition}] matches {len(hits)} rows, not one")
    return hits[0]


def _walk(data, selector: str, ref: str):
    cur = data
    for seg in _split_selector(selector):
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
            continue
        m = re.fullmatch(r"([^\[\]]*)((?:\[[^\]]*\])*)", seg)
        if not m:
            raise DocError(f"{ref}: bad selector part {seg!r}")
        try:
            cur = cur[m.group(1)] if m.group(1) else cur
        except (KeyError, TypeError):
            raise DocError(f"{ref}: no key {m.group(1)!r}") from None
        for cond in re.findall(r"\[([^\]]*)\]", m.group(2)):
            cur = _pick(cur, cond, ref)
    return cur


class Sources:
    """The files under ``root`` (``results/reference/``), each read once; the values and versions markers ask."""

    def __init__(self, root: Path = REFERENCE):
        self.root = Path(root)
        self._files: dict[str, object] = {}
        self._drift: dict[str, list[str]] = {}

    def _load(self, rel: str):
        if rel not in self._files:
            path = self.root / rel
            if not path.is_file():
                raise DocError(f"results/reference/{rel} does not exist")
            text = path.read_text()
            if path.suffix == ".json":
                self._files[rel] = json.loads(text)
            elif path.suffix == ".csv":
                self._files[rel] = list(csv.DictReader(io.StringIO(text)))
            elif path.suffix == ".md":
                self._files[rel] = _parse_table(text)
            else:
                self._files[rel] = text
        return self._files[rel]

    def value(self, ref: str):
        """``FILE:SELECTOR`` -> the value (a number where it reads as one)."""
        rel, sep, selector = ref.strip().partition(":")
        if not sep:
            raise DocError(f"{ref!r}: a reference is FILE:SELECTOR")
        rel = source_file(rel)
        data = self._load(rel)
        if isinstance(data, str):
            m = re.fullmatch(r"/(.*)/", selector)
            found = re.search(m.group(1), data, re.M) if m else None
            if not found:
                raise DocError(f"{ref}: a text file's selector is /regex/ with one group, matching the file")
            return _number(found.group(1))
        return _number(_walk(data, selector, ref))

    def version(self, rel: str) -> int | None | str:
        """The result version ``rel`` was made by, None if unknown, ``"timing"`` for a benchmark."""
        path = self.root / rel
        if rel.startswith("bench/") or path.name.startswith("bench"):
            return "timing"
        own = read_result_version(path)
        return own if own is not None else folder_version(path.parent)

    def drift(self, folder: str) -> list[str]:
        """Why a comparison folder's tables are no longer what the code computes, from its ``provenance.json``
        (``stage2_generate.compare.provenance``); empty when it has none or they still are."""
        if folder not in self._drift:
            from stage2_generate.compare.provenance import read_provenance, stale_reasons

            record = read_provenance(self.root / folder)
            self._drift[folder] = stale_reasons(record, ROOT) if record else []
        return self._drift[folder]

    def stale(self, rel: str) -> bool:
        v = self.version(rel)
        if v == "timing":
            return False
        return v is None or v < RESULT_VERSION or bool(self.drift(Path(rel).parent.as_posix()))

    def note(self, folder: str) -> str:
        """Why ``folder``'s outputs are stale and how to remake them."""
        if self.drift(folder):
            record = json.loads((self.root / folder / "provenance.json").read_text())
            return (f"`results/reference/{folder}/` is not what the code computes now ({self.drift(folder)[0]}; "
                    f"remake: `{record['command']}`)")
        versions = {self.version(rel) for rel in self._files if rel.startswith(folder + "/")}
        known = sorted(v for v in versions if isinstance(v, int))
        made = (f"made by result version {known[0]}" if known and None not in versions
                else "made before result versions were recorded")
        remake = next((how for prefix, how in REMAKE if (folder + "/").startswith(prefix)), "rerun what made them")
        return f"`results/reference/{folder}/` {made}, the code is at version {RESULT_VERSION} (remake: {remake})"


def source_file(rel: str) -> str:
    """A reference's file: a run folder alone (``demo``) means its ``metrics.json``."""
    return rel if Path(rel).suffix else f"{rel}/metrics.json"


def folder_version(folder: Path) -> int | None:
    """A run folder's result version: its ``metrics.json``'s, else the oldest of its tables' (None if one has none)."""
    metrics = read_result_version(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
    if metrics is not None:
        return metrics
    tables = [folder / n for n in ("decoding.md", "reconstruction.md", "validation.md", "table.md", "stats.md")
              if (folder / n).is_file()]
    versions = [read_result_version(t) for t in tables]
    return min(versions) if versions and None not in versions else None
