"""compare with seeds as an axis: intervals over seeds and images, verdicts beyond the seed spread,
`seeds:` / `--seeds`, and the tables, on synthetic per-image values (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from shared import stats
from shared.errors import UserError
from stage2_generate.compare import seed_stats
from stage2_generate.compare.cache import result_key, stage1_key, store_key
from stage2_generate.compare.spec import load_compare

N_IMAGES = 40


def _spec_file(tmp_path: Path, tiny_config: Path, variants: dict, **extra) -> Path:
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"name": "seeds", "base": tiny_config.name, "variants": variants, **extra}))
    return path


def _width(summary: dict) -> float:
    return summary["hi"] - summary["lo"]


# ------------------------------------------------------------------ intervals and verdicts


def test_the_interval_widens_when_the_seeds_disagree(rng):
    v = rng.normal(0.5, 0.1, N_IMAGES)
    agree = np.stack([v + rng.normal(0, 0.002, N_IMAGES), v + rng.normal(0, 0.002, N_IMAGES)])
    disagree = np.stack([v - 0.05, v + 0.05])  # the same images, the seed means 0.1 apart
    a, d = seed_stats.summary(agree, seed=0), seed_stats.summary(disagree, seed=0)
    image_only = stats.mean_ci(v, seed=0)
    assert a["n_seeds"] == d["n_seeds"] == 2 and a["n"] == d["n"] == N_IMAGES
    assert a["seed_sd"] < 0.002 and d["seed_sd"] == pytest.approx(0.1 / np.sqrt(2))
    assert d["mean"] == pytest.approx(v.mean()) and a["lo"] < a["mean"] < a["hi"]
    # seeds that agree: about the images' own interval; seeds 0.1 apart: that gap on top of it
    assert _width(a) == pytest.approx(_width(image_only), rel=0.15)
    assert _width(d) > _width(a) + 0.08
    assert d["lo"] < v.mean() - 0.05 and d["hi"] > v.mean() + 0.05


def test_one_seed_is_todays_bootstrap_over_images_exactly(rng):
    v = rng.normal(0.5, 0.1, N_IMAGES)
    v[3] = np.nan
    one = seed_stats.summary(v[None], seed=4)
    assert {k: one[k] for k in ("mean", "lo", "hi", "n")} == stats.mean_ci(v, seed=4)
    assert one["seed_sd"] is None and one["n_seeds"] == 1
    b = v + rng.normal(0.1, 0.01, N_IMAGES)
    paired = seed_stats.paired_summary(b, v, seed=4)
    assert {k: paired[k] for k in ("diff", "lo", "hi", "p", "n", "n_nonzero")} == stats.paired(b, v, seed=4)
    assert paired["verdict"] == "single seed"  # a large difference, but the seed noise is unknown


def test_a_difference_within_the_seed_spread_is_not_a_win_and_a_large_consistent_one_is(rng):
    base = rng.normal(0.5, 0.1, (3, N_IMAGES))  # method B, three seeds
    noise = rng.normal(0, 0.01, (3, N_IMAGES))
    small = base + np.array([[0.05], [-0.03], [0.01]]) + noise  # mean +0.01, seed SD 0.04
    large = base + 0.1 + noise
    within = seed_stats.paired_summary(small, base, seed=0)
    assert within["diff"] == pytest.approx(0.01, abs=0.01) and within["seed_sd"] > abs(within["diff"])
    assert within["verdict"] == "within noise" and within["n_seeds"] == 3
    win = seed_stats.paired_summary(large, base, seed=0)
    assert win["lo"] > 0 and win["diff"] > win["seed_sd"] and win["verdict"] == "win"
    assert seed_stats.paired_summary(base, large, seed=0)["verdict"] == "loss"
    # an interval that excludes 0 is not enough: the difference must exceed the seed SD of the difference
    assert seed_stats.verdict(0.02, 0.01, 0.03, 0.025, 3) == "within noise"
    # ... and the t-interval over three seed means (4.30 SD / sqrt 3 = 2.48 SD): 0.02 > 1 SD but < 2.48 SD
    assert seed_stats.t_half_width(0.015, 3) == pytest.approx(4.3027 * 0.015 / np.sqrt(3), rel=1e-4)
    assert seed_stats.verdict(0.02, 0.01, 0.03, 0.015, 3) == "within noise"
    assert seed_stats.verdict(0.04, 0.01, 0.07, 0.015, 3) == "win"
    assert seed_stats.verdict(0.04, 0.01, 0.07, 0.015, 2) == "within noise"  # 12.7 SD / sqrt 2 with two seeds
    assert seed_stats.verdict(0.02, -0.01, 0.05, 0.001, 3) == "within noise"
    assert seed_stats.verdict(0.5, 0.4, 0.6, 0.0, 1) == "single seed"


def test_lower_is_better_metrics_flip_the_verdict(rng):
    base = rng.normal(0.3, 0.05, (2, N_IMAGES))
    lower = base - 0.1 + rng.normal(0, 0.005, (2, N_IMAGES))
    assert seed_stats.paired_summary(lower, base, lower_is_better=True)["verdict"] == "win"
    assert seed_stats.paired_summary(lower, base, lower_is_better=False)["verdict"] == "loss"
    assert seed_stats.paired_summary(base, lower, lower_is_better=True)["verdict"] == "loss"


# ------------------------------------------------------------------ seeds: and --seeds


def test_seeds_make_one_run_per_variant_and_seed_sharing_stage_1(tmp_path, tiny_config):
    spec = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}, "b": {"generator.loss_pixel": 0.5}}, seeds=3))
    assert spec.seeds == [0, 1, 2] and spec.rows() == ["a", "b"]
    assert [v.name for v in spec.variants][:3] == ["a (seed 0)", "a (seed 1)", "a (seed 2)"]
    a = [v for v in spec.variants if v.row == "a"]
    assert [v.cfg.generator.seed for v in a] == [v.seed for v in a] == [0, 1, 2]
    assert {v.cfg.seed for v in spec.variants} == {0}  # the experiment's seed (stimuli, hold-out, folds) stays
    assert len({stage1_key(v.cfg) for v in a}) == 1 and len({store_key(v.cfg) for v in a}) == 1
    assert len({result_key(v.cfg) for v in spec.variants}) == 6
    assert spec.variant("b").name == "b (seed 0)" and spec.reference_for(spec.variant("b")).row == "a"
    listed = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}}, seeds=[7, 3]))
    assert [v.seed for v in listed.variants] == [7, 3] and [v.cfg.generator.seed for v in listed.variants] == [7, 3]
    # --seeds N wins over the file
    over = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}}, seeds=[7, 3]), seeds=2)
    assert [v.seed for v in over.variants] == [0, 1]
    # without seeds: one run per variant, named as before, on its config's own seed
    plain = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}, "b": {"generator.seed": 5}}))
    assert plain.seeds == [] and [(v.name, v.row, v.seed) for v in plain.variants] == [("a", "a", 0), ("b", "b", 5)]
    assert [v.name for v in load_compare(_spec_file(tmp_path, tiny_config, {"a": {}}, seeds=1)).variants] == ["a"]


@pytest.mark.parametrize("value", [0, -1, "3", 2.5, True, [], [1, 1], [0, "1"], [-2], {"n": 3}])
def test_bad_seeds_are_one_line_errors_naming_the_key(tmp_path, tiny_config, value):
    with pytest.raises(UserError, match=r"'seeds' in .*cmp.yaml is .*; give the number of generator seeds"):
        load_compare(_spec_file(tmp_path, tiny_config, {"a": {}}, seeds=value))


def test_seeds_refuse_another_setting_of_the_generator_seed(tmp_path, tiny_config):
    with pytest.raises(UserError, match=r"variant 'b' in .* sets generator.seed, which 'seeds' in .* sets for each"):
        load_compare(_spec_file(tmp_path, tiny_config, {"a": {}, "b": {"generator.seed": 4}}, seeds=2))
    with pytest.raises(UserError, match=r"--set sets generator.seed, which --seeds sets"):
        load_compare(_spec_file(tmp_path, tiny_config, {"a": {}}), ["generator.seed=3"], seeds=2)


def test_the_seeds_flag_on_the_command_line(tmp_path, tiny_config, capsys):
    from shared.cli import main
    from stage2_generate.cli import DESCRIPTION, VERBS

    path = _spec_file(tmp_path, tiny_config, {"a": {}}, seeds=3)
    argv = ["compare", "--config", str(path), "--seeds", "2", "--dry-run"]
    assert main("npp-generate", DESCRIPTION, VERBS, argv) == 0
    out = capsys.readouterr().out
    assert "# variant 'a (seed 0)'" in out and "# variant 'a (seed 1)'" in out and "(seed 2)" not in out
    assert main("npp-generate", DESCRIPTION, VERBS, ["compare", "--config", str(path), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--seeds is 0; give the number of generator seeds" in err


# ------------------------------------------------------------------ rows and tables


def _results(folder: Path, per_image: dict, validation: dict | None = None, threads: int | None = None,
             trained: list[int] | None = None) -> str:
    folder.mkdir(parents=True)
    (folder / "per_image.json").write_text(json.dumps({"natural": {"sub-01": per_image}}))
    metrics = {} if validation is None else {"reconstruction_validation": {"sub-01": validation}}
    if trained is not None:  # the training's threads, each start and resume
        metrics["reconstruction_info"] = {"generator": {"threads": trained}}
    if threads is not None:  # where stage 2 records its run: runs/<run>/meta.json
        (folder / "runs" / "stage2-001").mkdir(parents=True)
        (folder / "runs" / "stage2-001" / "meta.json").write_text(json.dumps({"machine": {"torch_threads": threads}}))
        metrics["runs"] = {"stage2": "runs/stage2-001"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_tables_show_the_seed_mean_interval_and_spread_and_stats_the_verdicts(tmp_path, tiny_config, rng):
    from stage2_generate.compare.report import collect, paired_rows, summarise_rows, write_tables

    spec = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}, "b": {"generator.loss_pixel": 0.5}},
                                   seeds=2, also=["pixel_ridge"]))
    names = [f"img{i:02d}" for i in range(N_IMAGES)]
    truth = rng.normal(0.4, 0.1, N_IMAGES)
    ridge = {"names": names, "pixcorr": list(truth - 0.2), "rmse": list(0.5 - truth)}
    records = []
    for v in spec.variants:  # b beats a by far more than the seeds move either
        shift = (0.2 if v.row == "b" else 0.0) + 0.01 * v.seed
        order = names[::-1] if v.seed == 1 else names  # another image order is matched by name
        pc = {n: x + shift for n, x in zip(names, truth)}
        per = {"wgan_gp": {"names": order, "pixcorr": [pc[n] for n in order], "rmse": [0.5 - pc[n] for n in order]},
               "pixel_ridge": ridge}
        records.append({"results": _results(tmp_path / "cache" / v.name, per)})
    rows = collect(spec, records)
    wgan = {r["variant"]: r for r in rows if r["method"] == "wgan_gp"}
    assert wgan["a"]["seeds"] == [0, 1] and wgan["a"]["values"]["pixcorr"].shape == (2, N_IMAGES)
    assert np.allclose(wgan["a"]["values"]["pixcorr"][1], truth + 0.01)  # re-ordered to the first seed's images
    summarise_rows(rows, seed=0)
    assert wgan["a"]["summary"]["pixcorr"]["seed_sd"] == pytest.approx(0.01 / np.sqrt(2))
    ridge_row = next(r for r in rows if r["method"] == "pixel_ridge" and r["variant"] == "a")
    assert ridge_row["summary"]["pixcorr"]["seed_sd"] == 0  # a deterministic method: no seed spread
    paired = paired_rows(spec, rows, seed=0)
    b_vs_a = next(e for e in paired if e["variant"] == "b" and e["method"] == "wgan_gp")
    assert b_vs_a["n_seeds"] == 2 and b_vs_a["pixcorr"]["verdict"] == "win" and b_vs_a["rmse"]["verdict"] == "win"
    assert b_vs_a["pixcorr"]["diff"] == pytest.approx(0.2)
    write_tables(tmp_path, spec, rows, paired)
    table = (tmp_path / "table.md").read_text()
    assert "| variant | subject | roi | method | seeds | threads | pixcorr |" in table
    assert "bootstrap interval over seeds and images" in table
    s = wgan["a"]["summary"]["pixcorr"]
    assert f"| a | sub-01 | VC | wgan_gp | 2 | n/a | {s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] ±0.007 |" in table
    row = next(r for r in csv.DictReader((tmp_path / "table.csv").open())
               if r["variant"] == "a" and r["method"] == "wgan_gp")
    assert float(row["pixcorr_seed_sd"]) == pytest.approx(0.01 / np.sqrt(2)) and row["n_seeds"] == "2"
    assert float(row["pixcorr_lo"]) <= float(row["pixcorr"]) <= float(row["pixcorr_hi"])
    text = (tmp_path / "stats.md").read_text()
    assert "## Verdicts" in text and ": win |" in text and "same test images and the same generator seeds" in text
    stat = list(csv.DictReader((tmp_path / "stats.csv").open()))
    assert {(r["variant"], r["method"], r["pixcorr_verdict"]) for r in stat} >= {("b", "wgan_gp", "win"),
                                                                                ("a", "pixel_ridge", "loss")}


def test_a_single_seed_table_keeps_its_shape_and_says_single_seed(tmp_path, tiny_config, rng):
    from stage2_generate.compare.report import paired_rows, summarise_rows, write_tables

    spec = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}, "b": {"generator.loss_pixel": 0.5}}))
    names = [f"img{i}" for i in range(N_IMAGES)]
    rows = [{"variant": n, "subject": "sub-01", "roi": "VC", "method": "wgan_gp", "split": "natural", "names": names,
             "seeds": [0], "values": {"pixcorr": rng.normal(0.5 + 0.3 * (n == "b"), 0.05, (1, N_IMAGES))}}
            for n in ("a", "b")]
    summarise_rows(rows, seed=0)
    for old in ("seeds.csv", "validation.csv"):  # an earlier several-seed run's files in the same folder
        (tmp_path / old).write_text("variant,seed\na,2\n")
    write_tables(tmp_path, spec, rows, paired_rows(spec, rows, seed=0))
    assert not (tmp_path / "seeds.csv").exists() and not (tmp_path / "validation.csv").exists()
    table = (tmp_path / "table.md").read_text()
    assert "| variant | subject | roi | method | threads | pixcorr |" in table and "±" not in table
    assert "Single seed: differences are not tested against seed noise" in table
    row = next(csv.DictReader((tmp_path / "table.csv").open()))
    assert row["pixcorr_seed_sd"] == "" and row["n_seeds"] == "1"
    text = (tmp_path / "stats.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| b |")]
    assert lines and all(": single seed |" in ln and "win" not in ln for ln in lines)
    assert "## Verdicts" not in text


def test_the_hold_out_shows_each_seed_spread_and_a_verdict_on_it(tmp_path, tiny_config, rng):
    """The validation hold-out, where settings are chosen, keeps seed means only: its columns show the
    between-seed SD and stats.md calls a hold-out difference a win only beyond it."""
    from stage2_generate.compare.report import collect, paired_rows, summarise_rows, write_tables

    spec = load_compare(_spec_file(tmp_path, tiny_config, {"a": {}, "b": {"generator.loss_pixel": 0.5},
                                                           "c": {"generator.loss_pixel": 2.0}}, seeds=3))
    names = [f"img{i:02d}" for i in range(N_IMAGES)]
    val = {"a": [0.40, 0.41, 0.42], "b": [0.45, 0.46, 0.47],  # b: +0.05 on every seed
           "c": [0.38, 0.44, 0.41]}  # c: +0.0 on average, seeds far apart
    records = []
    for v in spec.variants:
        pc = rng.normal(0.5, 0.1, N_IMAGES)
        per = {"wgan_gp": {"names": names, "pixcorr": list(pc), "rmse": list(0.5 - pc)}}
        held = {"wgan_gp": {"pixcorr": val[v.row][v.seed], "ssim": 0.2}}
        records.append({"results": _results(tmp_path / "cache" / v.name, per, held)})
    rows = collect(spec, records)
    summarise_rows(rows, seed=0)
    paired = paired_rows(spec, rows, seed=0)
    by = {e["variant"]: e["validation"] for e in paired}
    assert by["b"]["pixcorr"]["diff"] == pytest.approx(0.05) and by["b"]["pixcorr"]["verdict"] == "win"
    assert by["c"]["pixcorr"]["verdict"] == "within noise" and by["c"]["pixcorr"]["seed_sd"] > 0.02
    assert by["b"]["ssim"]["verdict"] == "within noise" and by["b"]["ssim"]["seed_sd"] == 0
    write_tables(tmp_path, spec, rows, paired)
    table = (tmp_path / "table.md").read_text()
    assert "| 0.410 ±0.010 |" in table and "±the between-seed SD" in table
    row = next(r for r in csv.DictReader((tmp_path / "table.csv").open()) if r["variant"] == "c")
    assert float(row["val_pixcorr"]) == pytest.approx(0.41) and float(row["val_pixcorr_seed_sd"]) == pytest.approx(0.03)
    long = [r for r in csv.DictReader((tmp_path / "validation.csv").open()) if r["variant"] == "c"]
    assert [(r["seed"], float(r["pixcorr"])) for r in long] == [("0", 0.38), ("1", 0.44), ("2", 0.41)]
    # the test images' mean per seed, beside the hold-out's (what a reading quotes seed by seed)
    per_seed = [r for r in csv.DictReader((tmp_path / "seeds.csv").open()) if r["variant"] == "c"]
    summary = next(r for r in rows if r["variant"] == "c")["summary"]["pixcorr"]
    assert [r["seed"] for r in per_seed] == ["0", "1", "2"]
    assert [float(r["pixcorr"]) for r in per_seed] == pytest.approx(summary["seed_means"], abs=5e-4)
    assert float(row["pixcorr"]) == pytest.approx(np.mean([float(r["pixcorr"]) for r in per_seed]), abs=1e-3)
    text = (tmp_path / "stats.md").read_text()
    assert "## The validation hold-out" in text and "+0.050 ±0.000: win" in text
    stat = {r["variant"]: r for r in csv.DictReader((tmp_path / "stats.csv").open())}
    assert stat["b"]["val_pixcorr_verdict"] == "win" and stat["c"]["val_pixcorr_verdict"] == "within noise"


def test_each_row_shows_its_thread_count_and_a_pair_across_counts_is_marked(tmp_path, tiny_config, rng):
    """A thread count alone moves a generator's mean: the tables show the counts each training ran under, and
    a pair is marked where seed i of one side ran under another count than seed i of the other."""
    from stage2_generate.compare.report import collect, paired_rows, summarise_rows, write_tables

    trained = {"a": [[1], [2]], "b": [[1], [2]],  # seed by seed the same counts: no mark
               "c": [[2], [1]],  # the same set of counts as a, but every seed against another count
               "d": [[1, 2], [2]],  # seed 0 resumed under another count
               "e": [None, [2]]}  # seed 0 did not record it (its stage-2 run's count, unknown here)
    spec = load_compare(_spec_file(tmp_path, tiny_config, {v: {"generator.loss_pixel": 1.0 + i / 10}
                                                           for i, v in enumerate(trained)}, seeds=2))
    names = [f"img{i:02d}" for i in range(N_IMAGES)]
    records = []
    for v in spec.variants:
        pc = rng.normal(0.5, 0.1, N_IMAGES)
        per = {"wgan_gp": {"names": names, "pixcorr": list(pc), "rmse": list(0.5 - pc)}}
        records.append({"results": _results(tmp_path / "cache" / v.name, per, trained=trained[v.row][v.seed])})
    rows = collect(spec, records)
    summarise_rows(rows, seed=0)
    paired = paired_rows(spec, rows, seed=0)
    by = {e["variant"]: e["threads"] for e in paired}
    assert by == {"b": "1/2", "c": "1/2 vs 1/2: differ", "d": "1/2 vs 1/2: differ", "e": "n/a"}
    write_tables(tmp_path, spec, rows, paired)
    table = {r["variant"]: r["threads"] for r in csv.DictReader((tmp_path / "table.csv").open())}
    assert table == {"a": "1/2", "b": "1/2", "c": "1/2", "d": "1/2", "e": "n/a"}
    text = (tmp_path / "stats.md").read_text()
    assert "**2 pair(s) were computed under different CPU thread counts**" in text
    stat = {r["variant"]: r["threads"] for r in csv.DictReader((tmp_path / "stats.csv").open())}
    assert stat == by


def test_results_without_a_training_record_fall_back_to_their_stage_2_run(tmp_path):
    from stage2_generate.compare.run_results import read_threads

    assert read_threads(Path(_results(tmp_path / "old", {}, threads=2))) == (2,)
    assert read_threads(Path(_results(tmp_path / "new", {}, threads=2, trained=[1, 1, 4]))) == (1, 4)
    assert read_threads(Path(_results(tmp_path / "none", {}))) is None


def test_shipped_comparisons_never_put_two_step_counts_in_one_generator_folder():
    """The training key leaves generator.iterations out (more steps resume a training), so two runs of one store
    folder and experiment that differ only in their step count would share a checkpoint folder, and the shorter one
    is refused once the longer has run (e.g. an ablation at 300 steps after `make seeds` at 600): every shipped
    comparison that runs the demo at fewer steps has an experiment folder of its own."""
    from pathlib import Path

    from stage2_generate.compare.cache import store_key

    root = Path(__file__).resolve().parents[1]
    steps: dict[tuple, set] = {}
    for path in sorted((root / "configs" / "ablations").glob("*.yaml")):
        bases = [None, *(root / "configs" / f"{n}.yaml" for n in ("small_strokes", "binary_shapes"))]
        for base in bases:
            for v in load_compare(path, base=base).variants:
                steps.setdefault((store_key(v.cfg), v.cfg.experiment), set()).add(v.cfg.generator.iterations)
    mixed = {k: s for k, s in steps.items() if len(s) > 1}
    assert not mixed, f"store folders shared by trainings of different lengths: {mixed}"
