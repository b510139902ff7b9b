"""``choices.csv`` of a comparison: what each run's methods chose, seed by seed (the values ``metrics.json`` keeps
beside a method's scores, ``shared.report.ROW_VALUES``: a penalty, pixel ridge's size and contrast gain, the blend's
weight), so a reading can say what was chosen without the runs' own folders."""

from __future__ import annotations

import json
from pathlib import Path

from shared.report import ROW_VALUES, csv_table
from shared.runs import atomic_write_text
from stage2_generate.compare.spec import CompareSpec
from stage2_generate.recon_files import split_method_key

COLUMNS = ["variant", "seed", "subject", "roi", "method", *ROW_VALUES]


def choice_rows(spec: CompareSpec, records: list[dict]) -> list[dict]:
    """One row per run, subject, ROI and method that recorded a choice (the first test set's section), in run
    order; ``records``: one per run of ``spec.variants``."""
    rows = []
    for v, rec in zip(spec.variants, records):
        metrics = json.loads((Path(rec["results"]) / "metrics.json").read_text())
        section = metrics.get("reconstruction", {})
        for subject, by_method in section.items():
            for key, values in by_method.items():
                chosen = {k: values[k] for k in ROW_VALUES if k in values}
                if chosen:
                    method, roi = split_method_key(key, v.cfg.data.rois[0])
                    rows.append({"variant": v.row, "seed": v.seed, "subject": subject, "roi": roi, "method": method,
                                 **chosen})
    return rows


def write_choices(out: Path, spec: CompareSpec, records: list[dict]) -> None:
    """``choices.csv`` (none when no method recorded a choice: an earlier run's file goes)."""
    rows = choice_rows(spec, records)
    if rows:
        atomic_write_text(out / "choices.csv", csv_table(rows, COLUMNS))
    else:
        (out / "choices.csv").unlink(missing_ok=True)
