"""Verb ``export``: figures and files from finished runs, without re-running anything.

Reads only what stage 2 saved (``reconstructions/`` and ``metrics.json`` of an experiment,
or of every variant of a comparison) and writes, under ``--out`` (default
``results/<experiment>/export/`` or ``results/compare/<name>/export/``):

* ``grid_<split>_pNN.png`` and ``.pdf``: true images on top, one row per chosen method (or
  variant), subject and ROI; all test images by default, ``--columns`` per page;
* ``shen_<split>_pNN.png`` and ``.pdf``: the layout of Shen et al. 2019's figures, the stimulus
  above one reconstruction per subject (one method and ROI);
* ``reconstructions.h5``: every chosen reconstruction in one file, ``/<row>/<subject>/<roi>/<split>/
  images`` and ``names``, and the stimuli under ``/stimuli/<split>/``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import UserError
from shared.report import named_test_images
from shared.runs import tmp_path

log = logging.getLogger(__name__)

FIGURES = ("grid", "shen", "hdf5")


@dataclass
class Source:
    """One finished stage-2 result folder and the name its rows carry."""

    label: str  # '' for a plain experiment, the variant's name for a comparison
    results: Path
    method: str | None  # the compared method of a comparison (None: any)
    cfg: object  # its config (the first of data.rois is the ROI whose methods carry no [ROI] suffix)


def add_arguments(parser) -> None:
    parser.add_argument("--base", metavar="CONFIG", help="for a compare file run with --base CONFIG: read that "
                        "comparison's results (<results_dir>/compare/<name>_<config's stem>/)")
    parser.add_argument("--figure", action="append", choices=FIGURES, default=[],
                        help="what to write (repeatable; default all): grid, shen, hdf5")
    parser.add_argument("--methods", nargs="+", default=[], metavar="M",
                        help="methods to show (default: every saved method; for a comparison, its method)")
    parser.add_argument("--variants", nargs="+", default=[], metavar="V", help="variants of a comparison (default all)")
    parser.add_argument("--subjects", nargs="+", default=[], metavar="S", help="subjects (default all)")
    parser.add_argument("--rois", nargs="+", default=[], metavar="R", help="ROIs (default: the first; 'all' for every one)")
    parser.add_argument("--split", default="", help="test set (default: the first)")
    parser.add_argument("--images", nargs="+", default=[], metavar="NAME", help="stimuli (default: all, in stored order)")
    parser.add_argument("--columns", type=int, default=0, help="images per page (default: the config's eval.grid_columns)")
    parser.add_argument("--cell", type=float, default=1.1, help="side of one image in inches at 110 dpi (default 1.1)")
    parser.add_argument("--out", default="", help="output folder")


def _sources(args) -> tuple[list[Source], object, Path]:
    """The result folders to read, the (reference) config and the default output folder."""
    from shared.config import load_config
    from stage2_generate.compare.spec import is_compare_file, load_compare

    if args.base and not is_compare_file(args.config):
        raise UserError(f"--base applies to a compare file; {args.config} is an experiment config: drop --base")
    if is_compare_file(args.config):
        from stage2_generate.compare.cache import variant_paths

        spec = load_compare(args.config, args.overrides, args.base)
        # one source per table row (a variant's first seed), or the runs named "<variant> (seed <s>)"
        first = {}
        for v in spec.variants:
            first.setdefault(v.row, v)
        chosen = [v for v in spec.variants if v.name in args.variants
                  or (v is first[v.row] and (not args.variants or v.row in args.variants))]
        named = {v.name for v in spec.variants} | set(first)
        unknown = set(args.variants) - named
        if unknown:
            raise UserError(f"--variants names {sorted(unknown)[0]!r}, not a variant of {args.config}; variants: "
                            f"{', '.join(dict.fromkeys(v.row for v in spec.variants))}")
        sources = [Source(v.name, variant_paths(v.cfg)[2], spec.method, v.cfg) for v in chosen]
        cfg = spec.variant(spec.reference).cfg
        return sources, cfg, Path(cfg.results_dir) / "compare" / spec.name / "export"
    cfg = load_config(args.config, args.overrides)
    return [Source("", cfg.results_path, None, cfg)], cfg, cfg.results_path / "export"


def _finished(src: Source, config: str) -> dict:
    path = src.results / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    if "reconstruction" not in metrics or not (src.results / "reconstructions").is_dir():
        what = f"variant {src.label!r} of {config}" if src.label else config
        hint = ("python -m stage2_generate compare --config " if src.label else
                "python -m stage2_generate run --config ") + config
        raise UserError(f"no finished stage-2 results for {what} in {src.results} (no reconstructions saved there); "
                        f"run {hint} first")
    return metrics


@dataclass
class Row:
    label: str
    images: np.ndarray  # (n, 3, S, S)
    names: list[str]
    subject: str
    roi: str
    method: str


def collect_rows(sources: list[Source], cfg, args, split: str) -> list[Row]:
    """Every chosen saved reconstruction, in the order stage 2 scored them."""
    from shared.report import section_key
    from stage2_generate.recon_files import method_paths, read_reconstructions, split_method_key, to_rgb

    rows: list[Row] = []
    for src in sources:
        metrics = _finished(src, args.config)
        section = metrics.get(section_key("reconstruction", split, next(iter(cfg.data.test))))
        if not section:
            raise UserError(f"{src.results} has no reconstructions of test set {split!r}; test sets: "
                            f"{', '.join(cfg.data.test)}")
        recon_root = src.results / "reconstructions"
        subjects = args.subjects or list(section)
        for subject in subjects:
            if subject not in section:
                raise UserError(f"--subjects names {subject!r}, which {src.results} has no reconstructions of; "
                                f"subjects: {', '.join(section)}")
            rois_present = [r for r in src.cfg.data.rois if (recon_root / subject / r).is_dir()]
            first_roi = src.cfg.data.rois[0]
            rois = rois_present if args.rois == ["all"] else (args.rois or [first_roi])
            for roi in rois:
                folder = recon_root / subject / roi / split
                if not folder.is_dir():
                    raise UserError(f"--rois names {roi!r}, which {src.results} has no reconstructions of; "
                                    f"ROIs: {', '.join(rois_present)}")
                methods = [m for m, r in (split_method_key(k, first_roi) for k in section[subject]) if r == roi]
                wanted = args.methods or ([src.method] if src.method else methods)
                for method in wanted:
                    if method not in methods:
                        raise UserError(f"--methods names {method!r}, not saved for {subject} {roi}; saved: "
                                        f"{', '.join(methods)}")
                    h5, _ = method_paths(folder, method)  # saved by method name in the ROI's folder
                    images, names = read_reconstructions(h5)
                    label = src.label or method
                    if src.label and (args.methods and len(wanted) > 1):
                        label = f"{src.label}: {method}"
                    rows.append(Row(label, to_rgb(images), names, subject, roi, method))
    return rows


def _pick(images: np.ndarray, names: list[str], wanted: list[str], where: str) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise UserError(f"--images names {missing[0]!r}, which {where} does not hold; e.g. {', '.join(names[:3])}")
    return images[[index[n] for n in wanted]]


def export_verb(args) -> None:
    from shared.plotting import image_grid
    from stage2_generate.recon_files import grid_title, read_stimuli

    sources, cfg, default_out = _sources(args)
    out = Path(args.out) if args.out else default_out
    split = args.split or next(iter(cfg.data.test))
    if split not in cfg.data.test:
        raise UserError(f"--split {split!r} is not a test set of {args.config}; test sets: {', '.join(cfg.data.test)}")
    figures = args.figure or list(FIGURES)
    rows = collect_rows(sources, cfg, args, split)
    true, true_names = read_stimuli(sources[0].results, split)
    names = args.images or true_names
    true = _pick(true, true_names, names, f"{sources[0].results}/reconstructions/stimuli")
    picked = [(r, _pick(r.images, r.names, names, f"{r.label} {r.subject} {r.roi}")) for r in rows]
    columns = args.columns or cfg.eval.grid_columns
    if columns < 1 or args.cell <= 0:
        raise UserError("--columns and --cell must be positive")
    pages = [slice(s, s + columns) for s in range(0, len(names), columns)]
    metrics = json.loads((sources[0].results / "metrics.json").read_text())
    multi = len({(r.subject, r.roi) for r in rows}) > 1
    if args.dry_run:
        print(f"would write to {out}: {', '.join(figures)} for {len(rows)} rows "
              f"({', '.join(dict.fromkeys(r.label for r in rows))}), {len(names)} images, {len(pages)} page(s)")
        return
    written = []
    def pages_of(prefix: str, figure_rows: dict[str, np.ndarray], title: str) -> None:
        for k, page in enumerate(pages):
            for ext in ("png", "pdf"):
                path = out / f"{prefix}_{split}_p{k + 1:02d}.{ext}"
                image_grid({lab: x[page] for lab, x in figure_rows.items()}, path, title=title, columns=columns,
                           cell=args.cell)
                written.append(path)

    if "grid" in figures:
        labels = [f"{r.label} {r.subject} {r.roi}" if multi else r.label for r, _ in picked]
        labels = ["variant true" if lab == "true" else lab for lab in labels]  # the top row is the stimuli
        title = grid_title(sources[0].cfg, rows[0].subject, rows[0].roi, split) if not multi \
            else named_test_images(split)
        pages_of("grid", {"true": true, **{lab: x for lab, (_, x) in zip(labels, picked)}}, title)
    if "shen" in figures:
        first = rows[0]
        per_subject = {r.subject: x for r, x in picked if (r.label, r.roi) == (first.label, first.roi)}
        pages_of("shen", {"stimulus": true, **per_subject},
                 f"{first.label} ({first.roi}), {named_test_images(split)}: stimulus above, one reconstruction per subject")
    if "hdf5" in figures:
        path = out / "reconstructions.h5"
        _write_h5(path, split, true, names, picked, metrics)
        written.append(path)
    log.info("export: %d files in %s (%d rows, %d images, %d page(s))", len(written), out, len(rows), len(names),
             len(pages))


def _write_h5(path: Path, split: str, true: np.ndarray, names: list[str], picked, metrics: dict) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    str_dt = h5py.string_dtype()
    with h5py.File(tmp, "w") as f:
        f.attrs["layout"] = "/<row>/<subject>/<roi>/<split>/images (n, 3, S, S) float32 in [0, 1] and names"
        f.attrs["judge"] = json.dumps(metrics.get("reconstruction_info", {}).get("judge", {}))
        g = f.create_group(f"stimuli/{split}")
        g.create_dataset("images", data=true.astype(np.float32))
        g.create_dataset("names", data=np.array(names, dtype=object), dtype=str_dt)
        for r, x in picked:
            g = f.create_group(f"{r.label}/{r.subject}/{r.roi}/{split}")
            g.create_dataset("images", data=x.astype(np.float32))
            g.create_dataset("names", data=np.array(names, dtype=object), dtype=str_dt)
            g.attrs["method"] = r.method
    os.replace(tmp, path)
