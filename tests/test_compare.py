"""compare: statistics checked against scipy, and a tiny comparison run twice (the second reuses all)."""

from __future__ import annotations

import csv
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from shared import stats
from shared.errors import UserError
from shared.report import ROW_VALUES
from stage2_generate.compare.cache import result_key, stage1_key, store_key
from stage2_generate.compare.spec import load_compare

ROOT = Path(__file__).resolve().parents[1]


def test_bootstrap_interval_agrees_with_scipy(rng):
    values = rng.gamma(2.0, 0.2, size=50)
    lo, hi = stats.bootstrap_ci(values, n_resamples=20000, seed=1)
    ref = sps.bootstrap((values,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(2)).confidence_interval
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert abs(lo - ref.low) < 0.05 * se and abs(hi - ref.high) < 0.05 * se
    assert lo < values.mean() < hi


def test_paired_difference_interval_and_wilcoxon_agree_with_scipy(rng):
    a = rng.normal(0.6, 0.1, size=40)
    b = a - 0.03 + rng.normal(0, 0.05, size=40)
    out = stats.paired(a, b, seed=0)
    d = a - b
    assert out["diff"] == pytest.approx(d.mean())
    assert out["p"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)
    ref = sps.bootstrap((d,), np.mean, n_resamples=20000, method="percentile",
                        random_state=np.random.default_rng(3)).confidence_interval
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert abs(out["lo"] - ref.low) < 0.05 * se and abs(out["hi"] - ref.high) < 0.05 * se
    same = stats.paired(a, a)
    assert same["diff"] == 0 and same["p"] == 1.0


def _files(tmp_path: Path, tiny_config: Path, variants: dict, **extra) -> Path:
    spec = {"name": "tiny", "base": tiny_config.name, "variants": variants, **extra}
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cache_keys_follow_what_each_stage_depends_on(tmp_path, tiny_config):
    path = _files(tmp_path, tiny_config, {
        "base": {}, "fc only": {"generator.condition_layers": ["fc7"]}, "V1": {"data.rois": ["V1"]},
        "more alphas": {"decoder.alphas": [1.0, 10.0, 1000.0]}, "other device": {"device": "cpu"},
        "no hold-out": {"eval.validation_fraction": 0.0}})
    spec = load_compare(path)
    v = {x.name: x.cfg for x in spec.variants}
    # stage 2 only: same store and stage 1; another result
    assert store_key(v["fc only"]) == store_key(v["base"]) and stage1_key(v["fc only"]) == stage1_key(v["base"])
    assert result_key(v["fc only"]) != result_key(v["base"])
    # another ROI has its own files in the same store, but its own stage-1 run
    assert store_key(v["V1"]) == store_key(v["base"]) and stage1_key(v["V1"]) != stage1_key(v["base"])
    # other penalties would overwrite the same files: another store
    assert store_key(v["more alphas"]) != store_key(v["base"])
    # where it runs changes no number
    assert result_key(v["other device"]) == result_key(v["base"])
    # another hold-out changes every decoder's training images: its own store and stage 1
    assert store_key(v["no hold-out"]) != store_key(v["base"]) and stage1_key(v["no hold-out"]) != stage1_key(v["base"])


def test_a_method_s_code_version_retires_only_the_results_of_configs_that_run_it(tmp_path, tiny_config, monkeypatch):
    from dataclasses import replace

    spec = load_compare(_files(tmp_path, tiny_config, {"base": {}, "vae": {"methods.run": ["vae"]},
                                                       "inversion": {"methods.run": ["inversion_dgn"]}}))
    v = {x.name: x.cfg for x in spec.variants}
    before = {name: result_key(cfg) for name, cfg in v.items()}
    from stage2_generate.methods import REGISTRY

    monkeypatch.setattr(REGISTRY["vae"], "version", REGISTRY["vae"].version + 1)
    after = {name: result_key(cfg) for name, cfg in v.items()}
    assert after["vae"] != before["vae"]
    assert after["base"] == before["base"] and after["inversion"] == before["inversion"]
    # the version enters the key only through methods.run: the same config without the method keeps its key
    assert result_key(replace(v["vae"], methods=replace(v["vae"].methods, run=[]))) == before["base"]


def test_a_variant_with_an_unknown_key_is_refused_naming_it(tmp_path, tiny_config):
    path = _files(tmp_path, tiny_config, {"base": {}, "typo": {"generator.loss_pixl": 0}})
    with pytest.raises(UserError, match=r"variant 'typo'.*generator.loss_pixl.*loss_pixel"):
        load_compare(path)


def _compare(cwd: Path, path: Path, *extra: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}  # one thread per stage, with or without --jobs: the same sums
    return subprocess.run([sys.executable, "-m", "stage2_generate", "compare", "--config", str(path), *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def test_compare_runs_every_variant_then_reuses_them(tmp_path, tiny_config):
    path = _files(tmp_path, tiny_config, {"base": {}, "fc only": {"generator.condition_layers": ["fc7"]}},
                  reference="base")
    first = _compare(tmp_path, path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stage 1 reused" in first.stderr  # the stage-2-only variant reuses the base's stage 1
    out = tmp_path / "results" / "compare" / "tiny"
    for name in ("table.md", "table.csv", "stats.md", "bars.png", "grid.png", "compare.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "table.csv").open()))
    wgan = {r["variant"]: r for r in rows if r["method"] == "wgan_gp"}
    assert set(wgan) == {"base", "fc only"}
    assert any(r["method"] == "pixel_ridge" for r in rows)  # the baseline stands in the table
    # the table's means are the means stage 2 wrote
    record = json.loads((out / "compare.json").read_text())
    for rec in record["variants"]:
        metrics = json.loads((Path(tmp_path / rec["results"]) / "metrics.json").read_text())
        want = metrics["reconstruction"]["sub-01"]["wgan_gp"]
        row = wgan[rec["name"]]
        shown = [m for m in want if m not in ROW_VALUES and not isinstance(want[m], dict)]
        assert {"pixcorr", "ssim", "rmse", "alexnet2", "alexnet5", "pairwise_id_pixel", "pairwise_id_pixel_euclid"} <= set(shown)
        for m in shown:
            assert float(row[m]) == pytest.approx(want[m], abs=1e-9), m
            assert float(row[f"{m}_lo"]) <= float(row[m]) <= float(row[f"{m}_hi"])
    assert "fc only" in (out / "stats.md").read_text()
    # decoding beside reconstruction: one set of rows per distinct stage 1 (fc only reuses the base's), the
    # numbers of the stage-1 run's own decoding.csv
    base_run = next(r for r in record["variants"] if r["name"] == "base")
    _same_decoding(out, [("base", "fc only", "VC", layer) for layer in ("conv3_4", "fc7")], {"base": base_run})

    second = _compare(tmp_path, path, PYTHONPROFILEIMPORTTIME="1")  # every module it imports, on stderr
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 of 2 variants reused" in second.stderr
    assert not re.search(r"\|\s+(torch|torchvision|sklearn)$", second.stderr, re.M)  # nothing to train: no torch
    assert "stage 1 (" not in second.stderr and "train generator" not in second.stderr
    assert json.loads((out / "compare.json").read_text())["summary"] == record["summary"]

    # two generator seeds of the base beside pixel ridge (the headline comparison's shape): seed 0 is the base
    # run above, reused; seed 1 shares its stage 1; the table averages the seeds, stats.md tests beyond their spread
    seeds = _compare(tmp_path, _files(tmp_path, tiny_config, {"base": {}}, name="tiny_seeds", seeds=2,
                                      also=["pixel_ridge"]))
    assert seeds.returncode == 0, seeds.stderr[-3000:]
    assert "variant 1/2 'base (seed 0)': reused" in seeds.stderr and "'base (seed 1)': stage 1 reused" in seeds.stderr
    runs = {r["seed"]: r for r in json.loads((out.parent / "tiny_seeds" / "compare.json").read_text())["variants"]}
    assert set(runs) == {0, 1} and runs[0]["results"] == base_run["results"]
    both = {s: json.loads((Path(r["results"]) / "metrics.json").read_text())["reconstruction"]["sub-01"]
            for s, r in runs.items()}
    row = next(r for r in csv.DictReader((out.parent / "tiny_seeds" / "table.csv").open()) if r["method"] == "wgan_gp")
    means = [both[s]["wgan_gp"]["pixcorr"] for s in (0, 1)]
    assert row["n_seeds"] == "2" and float(row["pixcorr"]) == pytest.approx(np.mean(means), abs=1e-9)
    # what each seed's pixel ridge chose (its penalty and size), as each run's metrics.json holds it
    chosen = [r for r in csv.DictReader((out.parent / "tiny_seeds" / "choices.csv").open()) if r["method"] == "pixel_ridge"]
    assert sorted(int(r["seed"]) for r in chosen) == [0, 1]
    for r in chosen:
        assert int(r["pixel_size"]) == both[int(r["seed"])]["pixel_ridge"]["pixel_size"]
        assert float(r["alpha"]) == pytest.approx(both[int(r["seed"])]["pixel_ridge"]["alpha"])
    assert float(row["pixcorr_seed_sd"]) == pytest.approx(np.std(means, ddof=1), abs=1e-9)
    assert "±" in (out.parent / "tiny_seeds" / "table.md").read_text()
    _same_decoding(out.parent / "tiny_seeds", [("base", "", "VC", layer) for layer in ("conv3_4", "fc7")],
                   {"base": base_run})  # the seeds collapsed into one set of rows
    verdicts = (out.parent / "tiny_seeds" / "stats.md").read_text().split("## Verdicts")[1]
    assert "| base | pixel_ridge | sub-01 | VC | wgan_gp (same variant) |" in verdicts and "single seed" not in verdicts

    # a variant on two ROIs beside the base: the figures of the second ROI too, and each stage 1's decoding
    rois = _compare(tmp_path, _files(tmp_path, tiny_config, {"base": {}, "two rois": {"data.rois": ["VC", "V1"]}},
                                     name="tiny_rois"))
    assert rois.returncode == 0, rois.stderr[-3000:]
    two = out.parent / "tiny_rois"
    for name in ("bars.png", "grid.png", "bars_sub-01_V1.png", "grid_sub-01_V1.png"):
        assert (two / name).is_file(), name
    assert not list(two.glob("*_VC.png"))  # the first ROI is bars.png and grid.png
    runs = {r["name"]: r for r in json.loads((two / "compare.json").read_text())["variants"]}
    _same_decoding(two, [("base", "", "VC", layer) for layer in ("conv3_4", "fc7")] + [
        ("two rois", "", roi, layer) for roi in ("VC", "V1") for layer in ("conv3_4", "fc7")], runs)

    # the same comparison from scratch, two variants at once: the same tables, stage 1 run once
    other = _fresh(tmp_path / "parallel", tiny_config)
    parallel = _compare(other, _files(other, other / tiny_config.name, {"base": {}, "fc only": {
        "generator.condition_layers": ["fc7"]}}, reference="base"), "--jobs", "2")
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert "2 at once" in parallel.stderr
    assert parallel.stderr.count(": stage 1 (feature store") == 1 and "stage 1 reused" in parallel.stderr
    assert "[fc only] " in parallel.stderr and "[base] " in parallel.stderr  # each variant's lines marked
    for name in ("table.md", "stats.md"):
        ours = (other / "results" / "compare" / "tiny" / name).read_text().replace(str(other), str(tmp_path))
        assert ours == (out / name).read_text(), name

    # and as cluster jobs (--launcher slurm, through submitit's local executor here): one stage-1 job for
    # both variants, then one stage-2 job each; the same tables
    pytest.importorskip("submitit")
    jobs = _fresh(tmp_path / "jobs", tiny_config)
    cluster = _compare(jobs, _files(jobs, jobs / tiny_config.name, {"base": {}, "fc only": {
        "generator.condition_layers": ["fc7"]}}, reference="base"), "--launcher", "slurm", "--time", "00:20:00",
        N2P_SUBMITIT_CLUSTER="local")
    assert cluster.returncode == 0, cluster.stderr[-3000:]
    assert cluster.stderr.count("computed once, for variants base, fc only") == 1, cluster.stderr[-3000:]
    assert cluster.stderr.count(": stage 2 (results") == 2
    logs = sorted((jobs / "work" / "compare" / "slurm").glob("*/*_log.err"))
    assert len(logs) == 3 and "train generator" in logs[-1].read_text() + logs[-2].read_text()
    for name in ("table.md", "stats.md"):
        ours = (jobs / "results" / "compare" / "tiny" / name).read_text().replace(str(jobs), str(tmp_path))
        assert ours == (out / name).read_text(), name


def _same_decoding(out: Path, want: list[tuple], runs: dict) -> None:
    """``out/decoding.csv`` has the rows ``want`` ((variant, shared_with, roi, layer)), each with the numbers of
    the decoding.csv stage 1 wrote for the run of ``runs`` named by ``variant``; decoding.md ends with the stamp."""
    from shared.report import version_stamp

    rows = list(csv.DictReader((out / "decoding.csv").open()))
    assert [(r["variant"], r["shared_with"], r["roi"], r["layer"]) for r in rows] == want
    for r in rows:
        own = csv.DictReader((Path(runs[r["variant"]]["results"]) / "decoding.csv").open())
        stage1 = next(o for o in own if (o["subject"], o["roi"], o["layer"]) == (r["subject"], r["roi"], r["layer"]))
        assert {k: r[k] for k in stage1} == stage1
        assert 0 <= float(r["pairwise_id"]) <= 1 and r["alpha"]
    assert (out / "decoding.md").read_text().endswith(version_stamp())


def _fresh(folder: Path, tiny_config: Path) -> Path:
    """``folder`` with a copy of the tiny config whose data, work and results live in it."""
    folder.mkdir()
    config = yaml.safe_load(tiny_config.read_text())
    config.update({"data": {**config["data"], "root": str(folder / "data")}, "work_dir": str(folder / "work"),
                   "results_dir": str(folder / "results")})
    (folder / tiny_config.name).write_text(yaml.safe_dump(config))
    return folder


def test_with_a_matrix_each_variant_is_paired_with_the_reference_of_the_same_values(tmp_path, tiny_config, rng):
    from stage2_generate.compare.report import paired_rows

    path = _files(tmp_path, tiny_config, {"a": {}, "b": {"generator.loss_pixel": 0.5}}, reference="a",
                  matrix={"seed": [0, 1]}, also=["pixel_ridge"])
    spec = load_compare(path)
    assert [v.name for v in spec.variants] == ["a seed=0", "a seed=1", "b seed=0", "b seed=1"]
    names = [f"img{i}" for i in range(12)]
    values = {v.name: rng.random(12) for v in spec.variants}
    rows = [{"variant": n, "subject": "sub-01", "roi": "VC", "method": "wgan_gp", "names": names,
             "values": {"pixcorr": x}} for n, x in values.items()]
    rows[3]["names"] = names[::-1]  # another image order is re-paired by name
    rows[3]["values"] = {"pixcorr": values["b seed=1"][::-1]}
    ridge = {v.name: rng.random(12) for v in spec.variants}  # the `also` method of each variant
    rows += [{"variant": n, "subject": "sub-01", "roi": "VC", "method": "pixel_ridge", "names": names,
              "values": {"pixcorr": x}} for n, x in ridge.items()]
    entries = paired_rows(spec, rows, seed=0)
    paired = {e["variant"]: e for e in entries if e["method"] == "wgan_gp"}
    assert set(paired) == {"b seed=0", "b seed=1"}
    assert paired["b seed=1"]["vs"] == "a seed=1 (VC)"
    assert paired["b seed=1"]["pixcorr"]["diff"] == pytest.approx((values["b seed=1"] - values["a seed=1"]).mean())
    # each variant's other method against that variant's generator, never another variant's
    also = {e["variant"]: e for e in entries if e["method"] == "pixel_ridge"}
    assert set(also) == set(values) and {e["vs"] for e in also.values()} == {"wgan_gp (same variant)"}
    from scipy.stats import wilcoxon

    for name in ("a seed=0", "b seed=1"):  # b seed=1's generator row lists its images in reverse: paired by name
        assert also[name]["pixcorr"]["diff"] == pytest.approx((ridge[name] - values[name]).mean()), name
        assert also[name]["pixcorr"]["p"] == pytest.approx(wilcoxon(ridge[name] - values[name]).pvalue), name


def test_results_scored_by_an_older_stage_2_are_refused_not_mixed_in(tmp_path):
    from stage2_generate.compare.run_results import read_per_image

    results = tmp_path / "cache" / "abc"
    results.mkdir(parents=True)
    old = {"natural": {"sub-01": {"wgan_gp": {"names": ["a", "b"], "pixcorr": [0.5, 0.6], "ssim": [0.2, 0.3]}}}}
    (results / "per_image.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"scored by an older stage 2 .*delete .*cache and rerun compare"):
        read_per_image(results)
    old["natural"]["sub-01"]["wgan_gp"]["rmse"] = [0.1, 0.2]
    (results / "per_image.json").write_text(json.dumps(old))
    assert read_per_image(results) == old


# ------------------------------------------------------------------ compare --launcher slurm


def _generate(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m stage2_generate <argv>`` in this process: its exit status and its stderr."""
    from shared.cli import main
    from stage2_generate.cli import DESCRIPTION, VERBS

    rc = main("npp-generate", DESCRIPTION, VERBS, argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("slurm, flags, env, message", [
    ({"partitoin": "gpu"}, [], {}, r"'slurm' in .*cmp.yaml has unknown key 'partitoin'; valid keys: partition, time"),
    ({"time": "2h"}, [], {}, r"'slurm.time' in .*cmp.yaml is '2h'; give the time limit in minutes \(e.g. 90\) or as HH:MM"),
    ({"mem": 32}, [], {}, r"'slurm.mem' in .*cmp.yaml is 32; give the memory per job with its unit, e.g. 32G"),
    ({}, ["--launcher", "slurm", "--time", "1:99:00"], {"N2P_SUBMITIT_CLUSTER": "local"}, r"--time is '1:99:00'; give"),
    ({}, ["--launcher", "slurm", "--gpus", "-1"], {"N2P_SUBMITIT_CLUSTER": "local"}, r"--gpus is '-1'; it must be a whole"),
    ({}, ["--time", "90"], {}, r"--time is for --launcher slurm"),
    ({}, ["--launcher", "slurm", "--jobs", "2"], {"N2P_SUBMITIT_CLUSTER": "local"}, r"--jobs is for --launcher local"),
    ({}, ["--launcher", "slurm"], {"N2P_SUBMITIT_CLUSTER": "pbs"}, r"N2P_SUBMITIT_CLUSTER is 'pbs'; it must be 'slurm'"),
])
def test_bad_cluster_settings_are_one_line_errors(tmp_path, tiny_config, capsys, monkeypatch, slurm, flags, env,
                                                  message):
    import re

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = _files(tmp_path, tiny_config, {"base": {}}, **({"slurm": slurm} if slurm else {}))
    rc, err = _generate(["compare", "--config", str(path), *flags], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "work").exists()  # refused before anything ran


def test_launcher_slurm_without_sbatch_is_refused_suggesting_jobs(tmp_path, tiny_config, capsys, monkeypatch):
    import shutil

    pytest.importorskip("submitit")
    if shutil.which("sbatch"):
        pytest.skip("sbatch is on PATH here")
    monkeypatch.delenv("N2P_SUBMITIT_CLUSTER", raising=False)
    rc, err = _generate(["compare", "--config", str(_files(tmp_path, tiny_config, {"base": {}})), "--launcher",
                         "slurm"], capsys)
    assert rc == 2 and "needs SLURM's sbatch, which is not on PATH here" in err and "--jobs N" in err, err


def test_slurm_settings_flags_win_over_the_compare_file(tmp_path, tiny_config):
    import argparse

    from stage2_generate.compare.slurm import slurm_settings

    path = tmp_path / "cmp.yaml"  # an unquoted HH:MM:SS, which YAML reads as a number of seconds
    path.write_text(f"base: {tiny_config.name}\nvariants: {{base: {{}}}}\nslurm:\n  partition: gpu\n  time: 1:30:00\n"
                    f"  mem: 16G\n  cpus: 4\n  extra: {{account: lab, mail-type: END}}\n")
    spec = load_compare(path)
    assert spec.slurm == {"partition": "gpu", "time_min": 90, "mem_gb": 16.0, "cpus": 4,
                          "extra": {"account": "lab", "mail_type": "END"}}
    flags = argparse.Namespace(partition=None, time="2-00:00:30", gpus="1", mem="512M", cpus=None)
    s = slurm_settings(spec.slurm, flags)
    assert (s.partition, s.time_min, s.gpus, s.mem_gb, s.cpus) == ("gpu", 2 * 1440 + 1, 1, 0.5, 4)
    assert s.executor_parameters() == {"timeout_min": 2881, "gpus_per_node": 1, "nodes": 1, "tasks_per_node": 1,
                                       "cpus_per_task": 4, "mem_gb": 0.5, "slurm_partition": "gpu",
                                       "slurm_additional_parameters": {"account": "lab", "mail_type": "END"}}


def test_a_failed_job_is_one_line_naming_the_variant_and_its_log(tmp_path, tiny_config):
    pytest.importorskip("submitit")
    path = _files(tmp_path, tiny_config, {"base": {}})
    failed = _compare(tmp_path, path, "--launcher", "slurm", N2P_SUBMITIT_CLUSTER="local",
                      N2P_FAILPOINT="features.batch:1:enospc")
    assert failed.returncode == 2, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: variant 'base', stage 1 failed on the cluster (job ") and \
        "no space left on the device" in last, last
    log_file = Path(last.rsplit("its log: ", 1)[1])
    assert log_file.is_file() and log_file.is_relative_to(tmp_path / "work" / "compare" / "slurm")
    assert not list((tmp_path / "work" / "compare").glob("store-*/*/stage1-*.json"))  # not marked finished


def test_the_first_failed_job_cancels_the_others(tmp_path):
    from stage2_generate.compare.slurm import _Cluster, _Job

    class Fake:
        def __init__(self, job_id, finished, error=None):
            self.job_id, self.finished, self.error, self.cancelled = job_id, finished, error, False
            self.paths = type("Paths", (), {"stderr": tmp_path / f"{job_id}_0_log.err"})()

        def done(self):
            return self.finished

        def exception(self):
            return self.error

        def cancel(self, check=True):
            self.cancelled = True

    (tmp_path / "2_0_log.err").write_text("progress\nerror: ROI 'V7' is not in the data\n")
    ok, bad, running = Fake("1", True), Fake("2", True, RuntimeError("StageFailed: exited with status 2")), Fake("3", False)
    cluster = object.__new__(_Cluster)
    cluster.poll = 0
    done = []
    with pytest.raises(UserError, match=r"^variant 'b', stage 2 failed on the cluster \(job 2\): ROI 'V7' is not in "
                                        r"the data; its log: .*2_0_log.err$"):
        cluster.wait([_Job(ok, "variant 'a', stage 2", "stage2_generate"),
                      _Job(bad, "variant 'b', stage 2", "stage2_generate"),
                      _Job(running, "variant 'c', stage 2", "stage2_generate")], done.append)
    assert [j.job for j in done] == [ok] and running.cancelled and not ok.cancelled
