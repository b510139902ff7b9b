"""Every relative link in the documentation resolves.

README.md, docs/*.md and results/reference/compare/*/README.md: each markdown link `[text](target)` and
image `![alt](target)` that is not http(s) or mailto must name a path that exists, relative to the file
that holds the link; a `#anchor` into a .md file (or a bare `#anchor` into the same file) must match one
of that file's headings by GitHub's slug rules. Links inside fenced code blocks and inline code are not
links and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "results" / "reference" / "compare").glob("*/README.md"))]
    return [f for f in files if f.is_file()]


FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target): the text may span lines and hold one level of brackets (an image
# inside a link); the target stops at whitespace (an optional "title" may follow) or ")"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# reference definitions: [label]: target
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
SKIP = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


def prose(text: str) -> str:
    """The text with fenced code blocks and inline code blanked out, line numbers kept."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
        elif fenced:
            out.append("")
        else:
            out.append(INLINE_CODE.sub(lambda m: " " * len(m.group()), line))
    return "\n".join(out)


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link, image and reference definition outside code."""
    text = prose(path.read_text(encoding="utf-8"))
    found = [(m.start(), m.group(1)) for m in (*LINK.finditer(text), *REFERENCE.finditer(text))]
    return sorted((text.count("\n", 0, start) + 1, target) for start, target in found)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than hyphens and
    spaces removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                         # \w keeps letters (any script), digits, _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's slug; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    root, path = root.resolve(), path.resolve()
    rel = path.relative_to(root)
    for number, target in links(path):
        if SKIP.match(target):
            continue
        where, _, anchor = target.partition("#")
        where, anchor = unquote(where), unquote(anchor)
        dest = (path.parent / where).resolve() if where else path
        if not dest.exists():
            shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
            problems.append(f"{rel}:{number}: link ({target}) -> {shown} does not exist")
            continue
        if anchor and dest.suffix == ".md" and dest.is_file() and anchor not in anchors(dest):
            problems.append(f"{rel}:{number}: link ({target}) -> no heading with anchor #{anchor} in "
                            f"{dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_checker_sees_what_it_checks(tmp_path: Path):
    """The checker itself: it finds links and images, skips code and the web, and catches a missing
    file, a missing anchor in another file and a missing anchor in the same file."""
    (tmp_path / "other.md").write_text("# Other file\n\n## Which `layers`, and why?\n")
    (tmp_path / "img.png").write_bytes(b"")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title here\n\n"
        "[ok](other.md#which-layers-and-why) ![ok](img.png) [ok](#title-here) [ok](https://x.org/#nope)\n"
        "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) ![gone](nope.png) [bad](other.md#nope) [bad](#nope)\n")
    problems = broken_links(doc, root=tmp_path)
    assert len(problems) == 4, problems
    assert all(p.startswith("doc.md:8:") for p in problems), problems
    assert any("missing.md" in p and "does not exist" in p for p in problems)
    assert any("#nope in other.md" in p for p in problems)
    assert any("#nope in doc.md" in p for p in problems)
