"""``make reference-seeds``'s helper (tools/seed_run.py): a seed's stage-2-only results get the stage-1 sections of
the run that decoded the stage 1 they share, and their summary is rendered again with them."""

from __future__ import annotations

import json
import shutil

from conftest import ROOT
from tools import seed_run


def test_merge_adds_stage_1s_sections_and_renders_the_summary_with_them(tmp_path):
    full = json.loads((ROOT / "results" / "reference" / "demo" / "metrics.json").read_text())
    assert set(seed_run.STAGE1_SECTIONS) <= set(full)  # the committed demo has both stages' sections
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "metrics.json").write_text(json.dumps(full))
    seed = tmp_path / "seed0"
    seed.mkdir()
    stage2_only = {k: v for k, v in full.items() if k not in seed_run.STAGE1_SECTIONS}
    stage2_only["runs"] = {"stage2": "runs/stage2-001"}
    (seed / "metrics.json").write_text(json.dumps(stage2_only))
    assert seed_run.main(["merge", str(tmp_path / "stage1"), str(seed / "metrics.json")]) == 0
    merged = json.loads((seed / "metrics.json").read_text())
    assert all(merged[k] == full[k] for k in seed_run.STAGE1_SECTIONS)
    assert merged["reconstruction"] == full["reconstruction"]  # the seed's own sections untouched
    assert merged["runs"]["stage2"] == "runs/stage2-001" and merged["runs"]["stage1"].startswith(str(tmp_path))
    summary = (seed / "summary.md").read_text()
    assert "## Data" in summary and "## Feature decoding" in summary and "wgan_gp" in summary
    shutil.rmtree(tmp_path / "stage1")
    assert seed_run.main(["merge", str(tmp_path / "stage1"), str(seed / "metrics.json")]) != 0  # one line, no trace
