"""The config reference (``docs/config.md``'s ``config-reference`` block), written from ``shared/config/schema.py``.

Every key of ``Config``, walked recursively through its dataclasses: dotted name, type, default (as YAML, from a
default ``Config()``), and its meaning, taken from the schema itself: a field's ``metadata={"doc": ...}``, else the
``# comment`` ending its line, else the comment lines right above it (a comment above a group of fields, each with
its own line comment, explains the group and is not shown); a field holding a section falls back to its class's
docstring. The name of a tuple of strings of the schema module in a meaning (``NETWORKS``, ``PUBLISHED``) is written
as its values. A field with none of these is a ``DocError`` naming it, so ``make docs`` and ``make_docs --check`` fail
until it says what it means. A mapping of name -> section (``data.test``) is written with a placeholder,
``data.test.<set>.bdata``, its default the value of each default entry. One table per top-level section.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from functools import lru_cache
from pathlib import Path

import yaml

from tools.doc_sources import ROOT, DocError, md_table

PLACEHOLDERS = {"data.test": "<set>"}  # the name a mapping's keys stand for in the reference; else <name>
_RST = re.compile(r"``([^`]+)``")
_CODE = re.compile(r"(`[^`]*`)")
_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9_]+\b")


@lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` -> the comment that says what it means ('' when none): the ``# comment``
    ending its line (its first or last), else the comment-only lines right above it, joined."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whether code precedes it on its line)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            comments[row] = (tok.string.lstrip("#").strip(), bool(lines[row - 1][:col].strip()))
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = next((comments[r][0] for r in (node.lineno, node.end_lineno) if comments.get(r, ("", False))[1]), "")
        if not text:
            above, row = [], node.lineno - 1
            while row in comments and not comments[row][1]:
                above.insert(0, comments[row][0])
                row -= 1
            text = " ".join(above)
        out[node.target.id] = text
    return out


def _docstring(cls: type) -> str:
    """The first paragraph of ``cls``'s own docstring, on one line ('' for none: not the signature that
    ``dataclass`` puts there)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _doc(cls: type, f: dataclasses.Field, tp, key: str) -> str:
    """What field ``f`` of ``cls`` means; a name of a tuple of strings in ``cls``'s module (``NETWORKS``) is
    written as its values."""
    text = f.metadata.get("doc") or field_comments(cls).get(f.name, "")
    if not text and _section(tp):
        text = _docstring(tp)
    if not text.strip():
        raise DocError(f"config key '{key}' ({cls.__name__}.{f.name} in {_where(cls)}) has no description: end its "
                       "line with a `# comment` saying what it means")
    module = vars(sys.modules[cls.__module__])

    def values(m):
        found = module.get(m.group(0))
        if isinstance(found, tuple) and found and all(isinstance(v, str) for v in found):
            return ", ".join(f"`{v}`" for v in found)
        return m.group(0)

    return _CONSTANT.sub(values, text.strip())


def _where(cls: type) -> str:
    path = Path(inspect.getsourcefile(cls)).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _section(tp) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _mapping_of_sections(tp) -> type | None:
    """The value class of a ``dict[str, <dataclass>]`` type, else None."""
    if typing.get_origin(tp) is dict and _section(typing.get_args(tp)[1]):
        return typing.get_args(tp)[1]
    return None


def _type_name(tp) -> str:
    """``int``, ``list[str]``, ``mapping`` (a dict of plain values) ..."""
    if typing.get_origin(tp) is dict:
        return "mapping"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def yaml_value(value) -> str:
    """``value`` as a YAML file or ``--set`` would write it (flow style, one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text[:-len("...")].strip() if text.endswith("\n...") else text


def markdown(text: str) -> str:
    """Comment or docstring text as a table cell: RST ``code`` as Markdown code, dotted config keys and
    ``<placeholder>`` paths as code (GitHub would take ``<layer>`` for an HTML tag), ``|`` escaped."""
    text = _RST.sub(r"`\1`", text)
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # the parts outside code spans
        parts[i] = _token().sub(lambda m: f"`{m.group(0)}`", parts[i])
    return "".join(parts).replace("|", "\\|")


@lru_cache(maxsize=None)
def _token() -> re.Pattern:
    """A dotted key of one of ``Config``'s sections (``features.weights``, ``eval.judge_*``), or a path with a
    ``<placeholder>`` in it."""
    from shared.config.schema import Config

    hints = typing.get_type_hints(Config)
    sections = "|".join(f.name for f in dataclasses.fields(Config) if _section(hints[f.name]))
    return re.compile(rf"\b(?:{sections})\.\w[\w.*]*(?<!\.)|[\w.:/{{}}-]*<[\w.]+>[\w.:/{{}}<>-]*(?<!\.)")


def _field_rows(cls: type, f: dataclasses.Field, tp, value, prefix: str) -> list[list[str]]:
    """The rows of field ``f`` of ``cls`` (holding ``value``): its own, then its section's keys if it holds one."""
    key = prefix + f.name
    doc = markdown(_doc(cls, f, tp, key))
    inner = _mapping_of_sections(tp)
    if _section(tp):
        return [[f"`{key}`", f"mapping (`{key}.*`)", "", doc], *rows(tp, value, key + ".")]
    if inner is None:
        return [[f"`{key}`", f"`{_type_name(tp)}`", f"`{yaml_value(value)}`", doc]]
    sub = f"{key}.{PLACEHOLDERS.get(key, '<name>')}"
    out = [[f"`{key}`", f"mapping: name → mapping (`{sub}.*`)", ", ".join(f"`{n}`" for n in value) or "`{}`", doc]]
    entries = {name: rows(inner, v, f"{key}.{name}.") for name, v in value.items()}
    for i, row in enumerate(rows(inner, inner(), sub + ".")):  # each key once, a default per default entry
        default = "; ".join(f"{name}: {r[i][2]}" for name, r in entries.items() if r[i][2])
        out.append([row[0], row[1], default, row[3]])
    return out


def rows(cls: type, instance, prefix: str = "") -> list[list[str]]:
    """``[key, type, default, meaning]`` (Markdown cells) of every key of dataclass ``cls`` under ``prefix``,
    defaults read from ``instance``; a section's keys follow the row of its own key."""
    hints = typing.get_type_hints(cls)
    return [r for f in dataclasses.fields(cls) for r in _field_rows(cls, f, hints[f.name], getattr(instance, f.name),
                                                                     prefix)]


def _table(rows_: list[list[str]]) -> str:
    return md_table(["key", "type", "default", "meaning"], rows_)


def reference(cls: type) -> str:
    """The reference of config class ``cls``: its own keys (not sections) under "Top level", then one heading and
    table per section, introduced by the section class's docstring."""
    instance, hints = cls(), typing.get_type_hints(cls)
    top = [f for f in dataclasses.fields(cls) if not _section(hints[f.name])]
    parts = [f"## Top level\n\n{markdown(_docstring(cls))}\n\n"
             + _table([r for f in top for r in _field_rows(cls, f, hints[f.name], getattr(instance, f.name), "")])]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _section(tp):
            parts.append(f"## `{f.name}`\n\n{markdown(_doc(cls, f, tp, f.name))}\n\n"
                         + _table(rows(tp, getattr(instance, f.name), f.name + ".")))
    return "\n".join(parts)


def config_reference(ctx=None) -> str:
    """``docs/config.md``'s block: every key of ``shared.config.schema.Config`` (reads no outputs: never stale)."""
    from shared.config.schema import Config

    return reference(Config)


CONFIG_BUILDERS = {"config-reference": config_reference}
