"""Copy finished comparisons' tables into ``results/reference/compare/`` (the committed reference).

``python -m tools.keep_compare NAME [NAME ...]`` copies ``table.md``/``.csv``, ``validation.csv``, ``seeds.csv``,
``stats.md``/``.csv``, ``decoding.md``/``.csv``, ``choices.csv``, ``bars.png``, ``grid.png``, the figures of further subjects and ROIs
(``bars_<subject>_<roi>.png``, ``grid_<subject>_<roi>.png``) and ``provenance.json`` of ``results/compare/NAME/``
to ``results/reference/compare/NAME/`` (each file but the required ones when present), leaving the
folder's own ``README.md`` (its question and files, written by hand) as it is. ``provenance.json`` is required: it is
how ``tests/test_reference_fresh.py`` tells that the committed tables are still what the code computes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("table.md", "table.csv", "validation.csv", "seeds.csv", "stats.md", "stats.csv", "decoding.md", "decoding.csv",
         "choices.csv", "bars.png", "grid.png", "provenance.json")
PATTERNS = ("bars_*.png", "grid_*.png")  # the figures of further subjects and ROIs, as many as the comparison has
REQUIRED = ("table.md", "table.csv", "provenance.json")


def keep(name: str, results: Path = ROOT / "results") -> Path:
    src, dst = results / "compare" / name, results / "reference" / "compare" / name
    missing = [f for f in REQUIRED if not (src / f).is_file()]
    if missing:
        raise SystemExit(f"error: {src}/{missing[0]} is missing: run the comparison '{name}' to the end first")
    dst.mkdir(parents=True, exist_ok=True)
    figures = sorted({p.name for folder in (src, dst) for pattern in PATTERNS for p in folder.glob(pattern)})
    for f in (*FILES, *figures):
        if (src / f).is_file():
            shutil.copyfile(src / f, dst / f)
        elif (dst / f).exists():  # a file the new run does not make must not outlive it
            (dst / f).unlink()
    return dst


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tools.keep_compare NAME [NAME ...]", file=sys.stderr)
        return 2
    for name in argv:
        try:
            print(f"kept {keep(name).relative_to(ROOT)}")
        except SystemExit as e:
            print(e, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
