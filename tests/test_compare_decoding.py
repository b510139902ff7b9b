"""compare's decoding table and per-(subject, ROI) figures, on synthetic stage-1 scores and rows (no training).
The same on a real tiny comparison: tests/test_compare.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from shared.report import DECODING_COLUMNS, version_stamp
from stage2_generate.compare.cache import stage1_marker, variant_paths
from stage2_generate.compare.spec import load_compare

LAYERS = ["conv3_4", "fc7"]


def _spec(tmp_path: Path, tiny_config: Path):
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"name": "dec", "base": tiny_config.name, "seeds": 2, "reference": "a", "variants": {
        "a": {}, "b, pixel": {"generator.loss_pixel": 0.5}, "two": {"data.rois": ["VC", "V1"]},
        "unit": {"decoder.alpha_per": "unit"}}}))
    return load_compare(path)


def _scores(rng, rois: list[str]) -> dict:
    return {"sub-01": {roi: {layer: {"profile_corr": float(rng.random()), "pattern_corr": float(rng.random()),
                                     "pairwise_id": float(rng.random()), "alpha": 10.0, "alpha_per": "layer",
                                     "n_voxels": 100, "n_units": 50, "cv_profile_corr": {"10": 0.1},
                                     "train_oof": {"profile_corr": 0.1, "pattern_corr": 0.2, "pairwise_id": 0.6,
                                                   "fold_alphas": [10.0, 10.0]}}
                             for layer in LAYERS} for roi in rois}}


def _records(tmp_path: Path, spec, rng) -> tuple[list[dict], dict]:
    """Each run a results folder; stage 1's scores where stage 1 ran: a's seed 0 (shared by a's seed 1 and b),
    for two a run of another comparison (named by the stage-1 marker), none for unit."""
    records, scores = [], {}
    for v in spec.variants:
        folder = tmp_path / "cache" / v.name
        folder.mkdir(parents=True)
        metrics = {"reconstruction": {}}
        if v.name == "a (seed 0)":
            metrics["decoding"] = scores[v.row] = _scores(rng, v.cfg.data.rois)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        records.append({"results": str(folder)})
    other = tmp_path / "cache" / "another comparison's run"
    other.mkdir()
    scores["two"] = _scores(rng, ["VC", "V1"])
    (other / "metrics.json").write_text(json.dumps({"decoding": scores["two"]}))
    two = spec.variant("two")
    marker = stage1_marker(variant_paths(two.cfg)[1], two.cfg)
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"by": "x", "config": str(other / "config.yaml")}))
    return records, scores


def test_one_decoding_row_per_distinct_stage_1_with_its_scores(tmp_path, tiny_config, rng):
    from stage2_generate.compare.decoding_table import decoding_groups, write_decoding

    spec = _spec(tmp_path, tiny_config)
    records, scores = _records(tmp_path, spec, rng)
    groups = decoding_groups(spec, records)  # a and b share one stage 1; two's folders lack its scores
    assert [g["variants"] for g in groups] == [["a", "b, pixel"], ["two"], ["unit"]]
    assert groups[2]["decoding"] is None and groups[1]["source"].endswith("another comparison's run")
    write_decoding(tmp_path, spec, groups)
    rows = list(csv.DictReader((tmp_path / "decoding.csv").open()))
    assert list(rows[0]) == ["variant", "shared_with", "decoder", *DECODING_COLUMNS]
    assert [(r["variant"], r["roi"], r["layer"]) for r in rows] == [
        ("a", "VC", "conv3_4"), ("a", "VC", "fc7"), ("two", "VC", "conv3_4"), ("two", "VC", "fc7"),
        ("two", "V1", "conv3_4"), ("two", "V1", "fc7")]  # seeds collapsed, the shared stage 1 once
    assert rows[0]["shared_with"] == "b, pixel" and rows[2]["shared_with"] == "" and rows[0]["decoder"] == "ridge"
    for r in rows:
        want = scores[r["variant"]]["sub-01"][r["roi"]][r["layer"]]
        for k in ("profile_corr", "pattern_corr", "pairwise_id", "alpha"):
            assert float(r[k]) == pytest.approx(want[k], abs=1e-12), k
        assert float(r["oof_pairwise_id"]) == pytest.approx(0.6)
    text = (tmp_path / "decoding.md").read_text()
    assert text.endswith(version_stamp()) and "Shared decodings: `a`, `b, pixel`." in text
    assert "No stage-1 scores were found for `unit`" in text and "one row for all seeds" in text
    assert text.count("| a | b, pixel | ridge | sub-01 | VC |") == 2


def test_figures_per_subject_and_roi_name_theirs_and_show_the_decoding(tmp_path, tiny_config, rng, monkeypatch):
    from shared import plotting
    from stage2_generate.compare.decoding_table import decoding_groups
    from stage2_generate.compare.figures import bars_plot, views

    spec = _spec(tmp_path, tiny_config)
    records, _ = _records(tmp_path, spec, rng)
    groups = decoding_groups(spec, records)
    shown = views(spec)
    assert [(v["subject"], v["roi"], v["anchor"], v["suffix"]) for v in shown] == [
        ("sub-01", "VC", "a", ""), ("sub-01", "V1", "two", "_sub-01_V1")]
    assert shown[1]["at"] == {"two": ("sub-01", "V1")}
    summary = {m: {"mean": 0.5, "lo": 0.4, "hi": 0.6} for m in ("pixcorr", "rmse")}
    rows = [{"variant": row, "subject": "sub-01", "roi": roi, "method": spec.method, "summary": summary,
             "values": dict.fromkeys(summary)}
            for row in spec.rows() for roi in spec.variant(row).cfg.data.rois]
    seen = {}
    real = plotting.interval_bars

    def spy(labels, kinds, panels, path, title="", heatmaps=None):
        seen[path.name] = (labels, title, heatmaps)
        real(labels, kinds, panels, path, title, heatmaps)

    monkeypatch.setattr(plotting, "interval_bars", spy)
    for view in shown:
        assert bars_plot(spec, rows, groups, view, tmp_path / f"bars{view['suffix']}.png", "t")
    labels, title, maps = seen["bars.png"]
    assert labels == ["a", "b, pixel", "two", "unit"] and "(sub-01, VC unless named)" in title
    heat_rows, layers, values = maps["decoding: profile_corr"]
    assert heat_rows == ["a; b, pixel", "two"] and layers == LAYERS  # unit has no scores: no row
    assert values[1, 1] == pytest.approx(groups[1]["decoding"]["sub-01"]["VC"]["fc7"]["profile_corr"])
    labels, title, maps = seen["bars_sub-01_V1.png"]
    assert labels == ["two"] and "(sub-01, V1 unless named)" in title
    assert np.allclose(maps["decoding: pairwise_id"][2], [[groups[1]["decoding"]["sub-01"]["V1"][layer]["pairwise_id"]
                                                           for layer in LAYERS]])
    assert Image.open(tmp_path / "bars_sub-01_V1.png").size[0] > 300


def test_keep_compare_copies_the_decoding_table_and_every_view_and_drops_stale_views(tmp_path):
    from tools.keep_compare import keep

    src = tmp_path / "compare" / "dec"
    src.mkdir(parents=True)
    for name in ("table.md", "table.csv", "provenance.json", "decoding.md", "decoding.csv", "bars.png", "grid.png",
                 "bars_sub-01_V1.png", "grid_sub-01_V1.png"):
        (src / name).write_text(name)
    dst = tmp_path / "reference" / "compare" / "dec"
    dst.mkdir(parents=True)
    (dst / "bars_sub-01_V4.png").write_text("from an earlier run")
    (dst / "README.md").write_text("by hand")
    assert keep("dec", tmp_path) == dst
    assert sorted(p.name for p in dst.iterdir()) == sorted(["README.md", *(p.name for p in src.iterdir())])
    assert (dst / "decoding.md").read_text() == "decoding.md" and (dst / "README.md").read_text() == "by hand"
