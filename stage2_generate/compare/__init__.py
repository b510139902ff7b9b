"""Verb ``compare``: run every variant of a compare file through both stages, with caching,
and write one table, paired statistics, a bar plot and a grid.

Each variant runs as the two real commands a user would type (``python -m stage1_decode
run`` and ``python -m stage2_generate run``) on its resolved config, in a subprocess, so a
comparison is exactly a set of ordinary runs. Products are cached under
``<work_dir>/compare/`` by what they depend on (``stage2_generate/compare/cache.py``):

* ``store-<key>/``: the feature store (and generator checkpoints) shared by every variant
  whose stage-1 inputs agree apart from subjects, ROIs and decoder kind, which have their
  own files inside it; a finished stage-1 configuration leaves ``stage1-<key>.json``
  there and is not run again;
* ``results/<key>/<experiment>/``: a variant's results (``metrics.json``, ``per_image.json``,
  saved reconstructions) and ``done.json`` once stage 2 has finished; a variant with the same
  key in any comparison is reused, never recomputed.

Seeds are an axis: ``seeds: N`` in the compare file (or ``--seeds N``) runs every variant with
generator seeds 0..N-1 (``generator.seed``; the experiment's ``seed``, and so stage 1, stays), each
(variant, seed) its own cached result; without it every variant runs once, on its config's seed.

Outputs, under ``<results_dir>/compare/<name>/`` (statistics: ``seed_stats.py``):

* ``table.md``/``table.csv``: one row per variant, subject, ROI and method: every metric's mean over
  seeds of each seed's mean over test images, its 95% bootstrap interval over seeds and images, and
  the between-seed SD (markdown ``0.671 [0.660, 0.682] ±0.008`` and a ``seeds`` column when any row
  has several seeds; CSV ``<metric>``, ``<metric>_lo``, ``<metric>_hi``, ``<metric>_seed_sd`` (empty
  with one seed), ``n_images``, ``n_seeds``); a single-seed table says so in its legend;
* ``seeds.csv`` (several seeds): each row's mean over test images seed by seed; ``validation.csv``: the
  hold-out's, likewise;
* ``stats.md``/``stats.csv``: each variant against the reference (and each ``also`` method against
  ``method``), paired over the same images and seeds: difference, interval over seeds and images,
  between-seed SD of the difference, Wilcoxon p over images, and a verdict per metric ("win" /
  "loss" beyond the seed noise, "within noise", or "single seed");
* ``decoding.md``/``decoding.csv``: stage 1's decoding scores (per subject, ROI and layer) of every distinct
  stage 1 among the variants (seeds and variants sharing a stage 1 give one set of rows;
  ``decoding_table.py``);
* ``bars.png`` (error bars: that interval; beneath, stage 1's decoding per layer), ``grid.png`` (the first
  seed's reconstructions), both of each variant's first subject and ROI, and ``bars_<subject>_<roi>.png``,
  ``grid_<subject>_<roi>.png`` for every further subject and ROI position (``figures.py``);
  ``compare.json`` (where each run's results are, for ``export``; the summaries and paired entries; where
  each decoding was read) and ``provenance.json`` (the command and each run's result key:
  ``provenance.py`` tells whether today's code still makes these tables).

``--launcher slurm`` runs the stages as cluster jobs instead (``slurm.py``, through submitit): one job
per stage-1 configuration still to compute, then one per variant's stage 2; the tables are the same.

The package: ``spec.py`` reads and validates a compare file, ``cache.py`` holds the cache keys and
folders, ``runner.py`` runs the variants on this machine, ``slurm.py`` as cluster jobs, ``run_results.py`` reads
a finished one's results back, ``seed_stats.py``
holds the statistics over seeds and images, ``report.py`` writes the tables, ``decoding_table.py`` the decoding
table, ``figures.py`` the figures, ``provenance.py``
records what they were made from; this module is
the verb (it imports the others when it runs: a cluster job imports ``slurm.py`` alone).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

from shared.config import dump_yaml
from shared.errors import UserError
from shared.faults import failpoint
from shared.runs import atomic_write_json

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--base", metavar="CONFIG", help="run the compare file over this experiment config (e.g. your "
                        "own data) instead of its 'base'; results go to <results_dir>/compare/<name>_<config's stem>")
    parser.add_argument("--only", action="append", default=[], metavar="VARIANT",
                        help="run only these variants (repeatable; a variant's name runs all its seeds, "
                             "'<variant> (seed <s>)' one); the tables cover what has finished")
    parser.add_argument("--seeds", type=int, metavar="N", help="run every variant with generator seeds 0..N-1 "
                        "(over the compare file's 'seeds'); tables average the seeds and test differences "
                        "against their spread")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N variants at once on this machine (variants sharing a stage 1 wait for it); "
                             "each stage uses its share of the cores (torch threads: cores / N)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: run the stages on this machine (--jobs); slurm: submit them as SLURM jobs "
                             "through submitit (one per stage-1 configuration, then one per variant), logs under "
                             "<work_dir>/compare/slurm/; N2P_SUBMITIT_CLUSTER=local runs those jobs here")
    cluster = parser.add_argument_group("SLURM jobs (--launcher slurm; over the compare file's 'slurm' mapping)")
    cluster.add_argument("--partition", metavar="NAME", help="the partition every job runs in")
    cluster.add_argument("--time", metavar="LIMIT", help="each job's time limit: minutes (e.g. 90) or HH:MM:SS "
                         "(default 08:00:00)")
    cluster.add_argument("--gpus", metavar="N", help="GPUs per job (default 0)")
    cluster.add_argument("--mem", metavar="SIZE", help="memory per job, e.g. 32G")
    cluster.add_argument("--cpus", metavar="N", help="CPUs per job (its stage's OMP_NUM_THREADS)")


def compare_verb(args) -> None:
    from stage2_generate.compare.choices import write_choices
    from stage2_generate.compare.decoding_table import decoding_groups, write_decoding
    from stage2_generate.compare.figures import write_figures
    from stage2_generate.compare.report import collect, paired_rows, several_seeds, summarise_rows, write_tables
    from stage2_generate.compare.runner import check_one_judge, check_variant_inputs, run_variant_record, run_variants
    from stage2_generate.compare.provenance import PROVENANCE, provenance
    from stage2_generate.compare.spec import load_compare

    t0 = time.time()
    spec = load_compare(args.config, args.overrides, args.base, getattr(args, "seeds", None))
    ref_cfg = spec.variant(spec.reference).cfg
    out = Path(ref_cfg.results_dir) / "compare" / spec.name
    if args.dry_run:
        for v in spec.variants:
            sys.stdout.write(f"# variant {v.name!r}: {v.changes}\n" + dump_yaml(v.cfg) + "\n")
        return
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1; {args.jobs} was given")
    launcher = getattr(args, "launcher", "local")
    cluster = settings = None
    if launcher == "slurm":
        from stage2_generate.compare.slurm import cluster_kind, slurm_settings

        if args.jobs != 1:
            raise UserError("--jobs is for --launcher local; under --launcher slurm every stage is its own job")
        settings = slurm_settings(spec.slurm, args)
        cluster = cluster_kind()
    else:
        given = [f"--{k}" for k in ("partition", "time", "gpus", "mem", "cpus") if getattr(args, k, None) is not None]
        if given:
            raise UserError(f"{given[0]} is for --launcher slurm; add --launcher slurm, or leave {given[0]} out")
    only = list(dict.fromkeys(args.only))
    todo = [v for v in spec.variants if not only or v.name in only or v.row in only]
    missing = sorted(set(only) - {v.name for v in todo} - {v.row for v in todo})
    if missing:
        raise UserError(f"--only names no variant {missing[0]!r}; variants: {', '.join(spec.rows())}")
    check_one_judge(spec.variants)
    check_variant_inputs([v for v in todo if run_variant_record(v) is None])
    from shared.locks import ExperimentLock

    lock = ExperimentLock.acquire(out, f"comparison '{spec.name}' ({out})")  # one compare of a name at a time
    n_rows = len(spec.rows())
    seeds = f" x {len(spec.seeds)} seeds ({len(spec.variants)} runs)" if len(spec.seeds) > 1 else ""
    log.info("compare %s: %d variants%s of %s, results in %s", spec.name, n_rows, seeds, spec.base, out)
    if launcher == "slurm":
        from stage2_generate.compare.slurm import run_on_cluster

        folder = (Path(ref_cfg.work_dir) / "compare" / "slurm").resolve()
        records = run_on_cluster(todo, settings, cluster, folder, spec.name, lambda: failpoint("compare.variant"))
    else:
        records = run_variants(todo, args.jobs, lambda: failpoint("compare.variant"))
    finished = [(v, r) for v, r in zip(todo, records)]
    if args.only:  # the tables cover every variant that has finished
        finished = [(v, run_variant_record(v)) for v in spec.variants]
        finished = [(v, r) for v, r in finished if r is not None]
    if not any(v.row == spec.reference for v, _ in finished):
        log.info("the reference variant %r has not run yet; no tables written", spec.reference)
        return
    sub = dataclasses.replace(spec, variants=[v for v, _ in finished])
    recs = [r for _, r in finished]
    rows = collect(sub, recs)
    summarise_rows(rows, ref_cfg.seed)
    paired = paired_rows(sub, rows, ref_cfg.seed)
    write_tables(out, sub, rows, paired)
    write_choices(out, sub, recs)
    groups = decoding_groups(sub, recs)
    write_decoding(out, sub, groups)
    for old in [*out.glob("bars_*.png"), *out.glob("grid_*.png")]:  # views of an earlier run of this name
        old.unlink()
    figures = write_figures(out, sub, rows, groups, f"compare {spec.name}: " + (
        "mean over seeds and test images, 95% bootstrap interval over seeds and images" if several_seeds(rows)
        else "mean over test images, 95% bootstrap interval (single seed)"), ref_cfg.eval.grid_columns)
    atomic_write_json(out / PROVENANCE, provenance(spec, args, sub.variants))
    atomic_write_json(out / "compare.json", {
        "name": spec.name, "file": str(spec.path), "base": str(spec.base), "reference": spec.reference,
        "method": spec.method, "seeds": spec.seeds, "variants": recs,
        "summary": [{k: r[k] for k in ("variant", "subject", "roi", "method")} | {"summary": r["summary"]}
                    for r in rows],
        "paired": paired,
        "decoding": [{"variants": g["variants"], "results": g["source"]} for g in groups],
        "figures": figures,
    })
    lock.release()
    reused = sum(r["reused"] == "both stages" for r in records)
    log.info("compare %s done in %.0f s (%d of %d variants reused); %s/table.md, stats.md, decoding.md, %s",
             spec.name, time.time() - t0, reused, len(records), out, ", ".join(figures))
