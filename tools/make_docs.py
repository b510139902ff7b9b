"""Write the result numbers and tables of README.md, docs/*.md and the comparisons' READMEs from the outputs.

``make docs`` (= ``python -m tools.make_docs``) rewrites every marked place of the documents (``documents``) from the
files under ``results/reference/``. ``--check`` writes nothing and exits 1 when a document differs from what it would write,
holds a decimal number or percentage that neither a marker nor the allow-list (``tools/doc_allowed.py``)
accounts for, or states a claim the outputs no longer support (``tests/test_doc_numbers.py`` runs it).

Markers are HTML comments, which GitHub does not show:

- a number: ``0.671<!--n demo/metrics.json:reconstruction.sub-01.wgan_gp.pixcorr-->``. The number right before
  the comment is what the generator writes there (write the comment alone, run ``make docs``, and it fills the
  number in). The comment holds a reference ``FILE:SELECTOR`` (FILE relative to ``results/reference/``; a run
  folder alone, ``demo``, means its ``metrics.json``) or an
  arithmetic expression of references in braces (``{A} - {B}``, ``100 * {A}``, ``min``, ``max``, ``abs``) and of
  derived values (``@name``: a function of ``DERIVED`` in ``tools/doc_blocks.py``, for what a row of markers
  would spell out, e.g. a minimum over layers), and
  optionally `` | FORMAT``, a Python format spec (default ``.3f`` for reals, ``d`` for integers; ``,.0f`` gives
  ``1,070``). Selectors: in a JSON file, dotted keys, ``[key=value,...]`` picking the one list item that
  matches, or ``[i]``; in a Markdown or CSV table, ``[column=value,...].column``; in a text file, ``/regex/``
  (its first group).
- a table (or any generated text): ``<!-- generated: NAME -->`` on its own line, the text, ``<!-- /generated -->``;
  NAME is a builder in ``tools/doc_blocks.py``.
- a claim: ``<!--? {A} > {B} -->`` beside the prose that states it; ``--check`` fails when it is false, and no
  command can fix that but rewriting the prose. A text value (a verdict of ``stats.csv``) may be compared with
  ``==`` or ``!=`` to a quoted text: ``<!--? {compare/x/stats.csv:[variant=v].pixcorr_verdict} == "loss" -->``
  says what ``stats.md`` says, by its own rule.

Stale outputs: every source has the result version of the code that made it (``shared.report.read_result_version``;
a file of a run's folder without its own version has its folder's: ``metrics.json``'s, else its tables'). A
version older than ``shared.report.RESULT_VERSION``, or none at all, is stale: a number from it is written with
``⚠`` after it, a generated table with a line saying so, and the document gets a note under its title naming the
stale outputs and the commands that remake them. Benchmarks (``bench/``, ``bench_*``) time the code: they carry no
result version and are never stale.
"""

from __future__ import annotations

import argparse
import ast
import operator
import re
import sys
from pathlib import Path

from tools.doc_sources import ROOT, DocError, Sources, folder_version, source_file  # noqa: F401 (the tests use them)

STALE = "⚠"
VALUE = r"[-+]?\d[\d,]*(?:\.\d+)?"
INLINE = re.compile(rf"(?P<val>{VALUE})?(?P<stale>{STALE})?<!--n (?P<spec>.*?)-->")
CLAIM = re.compile(r"<!--\? (?P<expr>.*?)-->")
BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated -->", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
# the numbers the hand-written text must account for: decimals and percentages (integers are counts and settings)
HAND_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)? ?%|(?<![\d.])\d+\.\d+(?!\.?\d)")
ANY_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Eq: operator.eq,
        ast.NotEq: operator.ne}
_FUNCS = {"min": min, "max": max, "abs": abs, "round": round}


def _number(value):
    if isinstance(value, str):
        raise DocError(f"{value!r} is not a number: a text value (a verdict) may only be compared with == or !=")
    return value


def _truth(value) -> bool:
    """A claim's (or an ``and``/``or`` operand's) value: a comparison's outcome, never a bare value (a text or a
    number would hold by being non-empty or non-zero)."""
    if not isinstance(value, bool):
        raise DocError(f"{value!r} is not a comparison: a claim states one (e.g. {{A}} > {{B}}, {{V}} == \"loss\")")
    return value


def _eval(node, names):
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_number(_eval(node.left, names)), _number(_eval(node.right, names)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(_eval(node.operand, names))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPS:
        left, right = _eval(node.left, names), _eval(node.comparators[0], names)
        if not isinstance(node.ops[0], (ast.Eq, ast.NotEq)) or isinstance(left, str) != isinstance(right, str):
            left, right = _number(left), _number(right)  # text only against text (an empty cell is text)
        return _OPS[type(node.ops[0])](left, right)
    if isinstance(node, ast.BoolOp):
        values = [_truth(_eval(v, names)) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
        return _FUNCS[node.func.id](*(_number(_eval(a, names)) for a in node.args))
    raise DocError(f"not allowed in a marker's expression: {ast.dump(node)[:60]}")


def evaluate(expr: str, sources: Sources) -> tuple[object, set[str]]:
    """A marker's expression -> (value, the files it read)."""
    from tools.doc_blocks import DERIVED

    expr = expr.strip()
    if "{" not in expr and "@" not in expr:
        return sources.value(expr), {source_file(expr.partition(":")[0])}
    refs: list[str] = []

    def name(m):
        refs.append(m.group(1) or m.group(0))
        return f"_v{len(refs) - 1}"

    code = re.sub(r"\{([^{}]+)\}|@\w+", name, expr)
    values, used = {}, set()
    for i, ref in enumerate(refs):
        if ref.startswith("@"):
            if ref[1:] not in DERIVED:
                raise DocError(f"{expr}: no derived value {ref} in tools/doc_blocks.py")
            ctx = Context(sources)
            values[f"_v{i}"] = DERIVED[ref[1:]](ctx)
            used |= ctx.used
        else:
            values[f"_v{i}"] = sources.value(ref)
            used.add(source_file(ref.partition(":")[0]))
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise DocError(f"{expr}: not an expression") from None
    try:
        return _eval(tree, values), used
    except DocError as exc:
        raise DocError(f"{expr}: {exc}") from None


def format_value(value, spec: str | None) -> str:
    if isinstance(value, str):
        return value
    if spec is None:
        spec = "d" if isinstance(value, int) else ".3f"
    return format(int(round(value)) if spec.endswith("d") else value, spec)


def _split_spec(spec: str) -> tuple[str, str | None]:
    expr, sep, fmt = spec.rpartition(" | ")
    return (expr, fmt.strip()) if sep else (spec, None)


def render(text: str, sources: Sources) -> tuple[str, list[str]]:
    """``text`` with every marked place rewritten from ``sources``; and the claims that no longer hold."""
    from tools.doc_blocks import BUILDERS

    problems: list[str] = []

    def block(m):
        name = m.group("name")
        if name == "stale":
            return m.group(0)
        if name not in BUILDERS:
            raise DocError(f"no builder {name!r} in tools/doc_blocks.py")
        ctx = Context(sources)
        body = BUILDERS[name](ctx).rstrip("\n") + "\n"
        old = sorted({Path(rel).parent.as_posix() for rel in ctx.used if sources.stale(rel)})
        if old:
            body += "\n" + f"{STALE} **Stale:** " + "; ".join(sources.note(f) for f in old) + ".\n"
        return f"<!-- generated: {name} -->\n{body}<!-- /generated -->"

    text = BLOCK.sub(block, text)
    stale_folders: set[str] = set()

    def inline(m):
        expr, fmt = _split_spec(m.group("spec"))
        value, used = evaluate(expr, sources)
        old = {Path(rel).parent.as_posix() for rel in used if sources.stale(rel)}
        stale_folders.update(old)
        return format_value(value, fmt) + (STALE if old else "") + f"<!--n {m.group('spec')}-->"

    text = INLINE.sub(inline, text)
    for m in CLAIM.finditer(text):
        value, _ = evaluate(m.group("expr"), sources)
        try:
            holds = _truth(value)
        except DocError as exc:
            raise DocError(f"{m.group('expr').strip()}: {exc}") from None
        if not holds:
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"line {line}: the claim {m.group('expr').strip()!r} no longer holds: rewrite the prose")
    note = ""
    if stale_folders:
        note = (f"> {STALE} marks a number taken from an output older than the code: "
                + "; ".join(sources.note(f) for f in sorted(stale_folders)) + ".\n")
    if "<!-- generated: stale -->" not in text and note:
        text = re.sub(r"\A(# [^\n]*\n)\n?", lambda m: m.group(1) + "\n<!-- generated: stale -->\n<!-- /generated -->\n\n",
                      text, count=1)
    text = text.replace(next((m.group(0) for m in BLOCK.finditer(text) if m.group("name") == "stale"), "\0"),
                        f"<!-- generated: stale -->\n{note}<!-- /generated -->")
    return text, problems


class Context:
    """What a block builder reads through: values from the sources, the files it used remembered."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self.used: set[str] = set()

    def get(self, ref: str):
        value = self.sources.value(ref)
        self.used.add(source_file(ref.partition(":")[0]))
        return value

    def rows(self, rel: str):
        """A whole JSON, CSV or Markdown file as read (rows of a table, a list or a mapping)."""
        self.used.add(rel)
        return self.sources._load(rel)

    def fmt(self, ref: str, spec: str | None = None) -> str:
        return format_value(self.get(ref), spec)


def _blank(text: str, spans) -> str:
    chars = list(text)
    for a, b in spans:
        chars[a:b] = [c if c == "\n" else " " for c in chars[a:b]]
    return "".join(chars)


def generated_spans(text: str) -> list[tuple[int, int]]:
    """Where generated text sits: block bodies and the numbers before number markers."""
    spans = [(m.start("body"), m.end("body")) for m in BLOCK.finditer(text)]
    return spans + [(m.start(), m.start("spec") - len("<!--n ")) for m in INLINE.finditer(text)]


def hand_numbers(text: str) -> list[tuple[int, int]]:
    """Spans of the decimals and percentages written by hand (outside markers and comments)."""
    visible = _blank(text, generated_spans(text) + [m.span() for m in COMMENT.finditer(text)])
    return [m.span() for m in HAND_NUMBER.finditer(visible)]


def result_numbers(text: str) -> list[tuple[int, int]]:
    """Every number a reader sees that the check stands behind: generated ones and hand-written decimals."""
    comments = [m.span() for m in COMMENT.finditer(text)]
    spans = []
    for a, b in generated_spans(text):
        spans += [(a + m.start(), a + m.end()) for m in ANY_NUMBER.finditer(_blank(text, comments)[a:b])]
    return sorted(set(spans + hand_numbers(text)))


def check_text(name: str, text: str, sources: Sources) -> list[str]:
    """What is wrong with document ``name`` holding ``text``: empty when ``make docs`` would leave it as it is."""
    from tools.doc_allowed import ALLOWED

    try:
        rendered, problems = render(text, sources)
    except DocError as e:
        return [f"{name}: {e}"]
    if rendered != text:
        a, b = text.splitlines(), rendered.splitlines()
        line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) + 1
        problems.append(f"line {line}: differs from what `make docs` writes")
    covered = [(m.start(), m.end()) for phrase in ALLOWED.get(name, {}) for m in re.finditer(re.escape(phrase), text)]
    for a, b in hand_numbers(text):
        if not any(s <= a and b <= e for s, e in covered):
            line = text.count("\n", 0, a) + 1
            problems.append(f"line {line}: {text[a:b]!r} is written by hand: give it a marker, or an allow-list "
                            "entry in tools/doc_allowed.py if it is a setting")
    return [f"{name}: {p}" for p in problems]


# the compare folders whose README's reading was written by hand before readings took markers; each is in
# tests/test_reference_fresh.py's KNOWN_STALE too, and leaves both when `make ablations` remakes it and its reading
# is rewritten with markers (the test fails while a remade folder is still listed here)
HAND_READINGS = {"losses"}


def documents(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md and the README of every committed comparison (its reading beside its tables) but
    ``HAND_READINGS``'."""
    readings = [p for p in sorted((root / "results" / "reference" / "compare").glob("*/README.md"))
                if p.parent.name not in HAND_READINGS]
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *readings]


def doc_name(doc: Path, root: Path = ROOT) -> str:
    """How errors and ``tools/doc_allowed.py`` name a document: ``README.md``, ``lowlevel.md`` (docs/), or a
    comparison's ``compare/NAME/README.md``."""
    doc = doc.resolve()
    return doc.name if doc.parent in (root, root / "docs") else doc.relative_to(root / "results" / "reference").as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.make_docs", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document is not current")
    args = parser.parse_args(argv)
    sources, failed = Sources(), []
    for doc in documents():
        text = doc.read_text()
        problems = check_text(doc_name(doc), text, sources)
        if not args.check:
            try:
                rendered, _ = render(text, sources)
            except DocError as e:
                failed.append(f"{doc_name(doc)}: {e}")
                continue
            if rendered != text:
                doc.write_text(rendered)
                print(f"rewrote {doc.relative_to(ROOT)}")
            problems = [p for p in problems if "differs from what" not in p]
        failed += problems
    for problem in failed:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
