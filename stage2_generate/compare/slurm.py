"""``compare --launcher slurm``: a compare file's stages as cluster jobs, through submitit.

Two phases, each a set of jobs compare waits for:

1. one job per distinct stage-1 configuration (``stage1_marker``) that no earlier run has finished: its
   stage 1, on the first of its variants' configs; compare marks it finished when the job succeeds;
2. one job per variant still to run (per results folder): its stage 2; compare marks the variant done
   when the job succeeds.

Each job runs the real command (``python -m stage1_decode run --config <results>/config.yaml``, or
``stage2_generate``) from compare's working directory, with ``N2P_WAIT_FOR_LOCKS=1`` (stage-2 jobs of
one feature store wait for each other's generator and coder locks) and ``OMP_NUM_THREADS`` set to the
job's CPUs when they are given: a job is exactly an ordinary run. Its output goes to its log files under
``<work_dir>/compare/slurm/<job id>/``. The first failed job stops the comparison: the jobs still queued
or running are cancelled, and compare reports the failure in one line naming the variant and the job's
log. Finished stage-1 configurations and variants are marked as with ``--jobs``, so a rerun resumes.

``N2P_SUBMITIT_CLUSTER=local`` runs the same jobs on this machine through submitit's local executor (the
tests do); the default, ``slurm``, needs SLURM's ``sbatch`` on PATH.

This module imports nothing heavy at the top: a job imports it to run ``run_stage_job``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.children import exit_text, missing_line, missing_module
from shared.errors import UserError

log = logging.getLogger(__name__)

CLUSTER_ENV = "N2P_SUBMITIT_CLUSTER"  # "slurm" (default) or "local": submitit's executor for --launcher slurm
CLUSTERS = ("slurm", "local")
DEFAULT_TIME_MIN = 8 * 60  # a job's time limit when neither --time nor slurm.time gives one
FLAGS = ("partition", "time", "gpus", "mem", "cpus")  # the flags of --launcher slurm (and keys of `slurm:`)


# ------------------------------------------------------------------ in the job


class StageFailed(RuntimeError):
    """A stage's command exited with an error (its ``error:`` line is in the job's log)."""


def run_stage_job(module: str, config_path: str, cwd: str, threads: int = 0) -> None:
    """In a cluster job: ``python -m <module> run --config <config_path>`` from ``cwd``, its output to the
    job's log, waiting for busy locks instead of refusing; ``threads``: OMP_NUM_THREADS (0: as inherited)."""
    from shared.locks import WAIT_FOR_LOCKS

    env = {**os.environ, WAIT_FOR_LOCKS: "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", module, "run", "--config", config_path]
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    try:
        rc = proc.wait()
    except BaseException:  # the job cancelled (SIGINT from submitit's local executor)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if rc != 0:
        raise StageFailed(f"python -m {module} run --config {config_path} {exit_text(rc)}")


# ------------------------------------------------------------------ settings


@dataclass
class SlurmSettings:
    """Each job's resources: the compare file's ``slurm`` mapping, overridden by the flags."""

    partition: str | None = None
    time_min: int = DEFAULT_TIME_MIN
    gpus: int = 0
    mem_gb: float | None = None
    cpus: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def executor_parameters(self) -> dict[str, Any]:
        """submitit's parameters (its local executor ignores those it has no use for)."""
        params: dict[str, Any] = {"timeout_min": self.time_min, "nodes": 1, "tasks_per_node": 1}
        if self.gpus:  # not --gpus-per-node=0, which clusters without GPUs may refuse
            params["gpus_per_node"] = self.gpus
        if self.cpus:
            params["cpus_per_task"] = self.cpus
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params

    def describe(self) -> str:
        parts = [f"partition {self.partition}" if self.partition else "the default partition",
                 f"{self.time_min} min", f"{self.gpus} GPU" + ("s" if self.gpus != 1 else "")]
        if self.mem_gb is not None:
            parts.append(f"{self.mem_gb:g} GB")
        if self.cpus:
            parts.append(f"{self.cpus} CPU" + "s" * (self.cpus != 1))
        parts += [f"--{k.replace('_', '-')}={v}" for k, v in self.extra.items()]
        return ", ".join(parts)


def slurm_settings(file_settings: dict[str, Any], args) -> SlurmSettings:
    """The jobs' resources: ``file_settings`` (the compare file's ``slurm``, checked by ``spec.slurm_settings``)
    with the flags given on the command line over them; one-line errors naming a bad flag."""
    from stage2_generate.compare.spec import parse_count, parse_mem, parse_time

    s = SlurmSettings(**file_settings)
    if args.partition is not None:
        if not args.partition.strip() or any(c.isspace() for c in args.partition.strip()):
            raise UserError(f"--partition is {args.partition!r}; give a partition's name, e.g. gpu")
        s.partition = args.partition.strip()
    if args.time is not None:
        s.time_min = parse_time(args.time, "--time")
    if args.gpus is not None:
        s.gpus = parse_count(args.gpus, "--gpus", 0)
    if args.mem is not None:
        s.mem_gb = parse_mem(args.mem, "--mem")
    if args.cpus is not None:
        s.cpus = parse_count(args.cpus, "--cpus", 1)
    return s


def cluster_kind() -> str:
    """submitit's executor for --launcher slurm (``N2P_SUBMITIT_CLUSTER``), refusing in one line what cannot run."""
    cluster = os.environ.get(CLUSTER_ENV, "").strip() or "slurm"
    if cluster not in CLUSTERS:
        raise UserError(f"{CLUSTER_ENV} is {cluster!r}; it must be 'slurm' (the default: jobs through sbatch) or "
                        f"'local' (the same jobs on this machine, for testing)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError("--launcher slurm needs the submitit package, which is not installed; install it with "
                        "pip install -e '.[cluster]' (or pip install submitit)") from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--launcher slurm needs SLURM's sbatch, which is not on PATH here; run compare on the "
                        "cluster's login node, or use --jobs N to run the variants on this machine")
    return cluster


# ------------------------------------------------------------------ submitting and waiting


@dataclass
class _Job:
    job: Any  # a submitit Job
    what: str  # "variant 'x', stage 1"
    module: str
    variants: list = field(default_factory=list)  # the Variants it runs for (the first's config)
    t0: float = field(default_factory=time.time)


class _Cluster:
    def __init__(self, folder: Path, settings: SlurmSettings, cluster: str, name: str):
        import submitit

        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        self.executor.update_parameters(**settings.executor_parameters())
        self.threads = settings.cpus or 0
        self.name = name
        self.poll = 2.0 if cluster == "slurm" else 0.5

    def submit(self, module: str, config_path: Path, what: str, tag: str, variants: list) -> _Job:
        self.executor.update_parameters(name=f"compare-{self.name}-{tag}"[:64])
        try:
            job = self.executor.submit(run_stage_job, module, str(config_path), os.getcwd(), self.threads)
        except Exception as exc:  # sbatch refused it (a partition, time or account the cluster does not have)
            msg = " ".join(str(exc).split())[:400]
            raise UserError(f"{what}: the cluster refused the job ({msg}); check --partition, --time, --gpus, "
                            f"--mem, --cpus and the compare file's slurm settings") from None
        return _Job(job, what, module, variants)

    def wait(self, jobs: list[_Job], on_done) -> None:
        """Wait for every job, calling ``on_done(job)`` as each succeeds; the first failure cancels the others
        and is raised as one line (so is Ctrl-C, after cancelling)."""
        pending = list(jobs)
        try:
            while pending:
                for j in list(pending):
                    if not j.job.done():
                        continue
                    pending.remove(j)
                    exc = j.job.exception()
                    if exc is not None:
                        raise UserError(_failure(j, exc))
                    on_done(j)
                if pending:
                    time.sleep(self.poll)
        except BaseException:
            _cancel(pending)
            raise


def _cancel(jobs: list[_Job]) -> None:
    """Cancel ``jobs`` (queued or running), saying so."""
    for j in jobs:
        try:
            j.job.cancel(check=False)
        except Exception:  # noqa: BLE001 - already gone
            pass
    if jobs:
        log.info("cancelled %d job%s still queued or running: %s", len(jobs), "s" * (len(jobs) > 1),
                 ", ".join(str(j.job.job_id) for j in jobs))


def _failure(j: _Job, exc: BaseException) -> str:
    """One line for a failed job: the stage's own ``error:`` line when its log has one, and where the log is."""
    log_path = j.job.paths.stderr
    reason = output = ""
    try:
        output = log_path.read_text(errors="replace")
        errors = [ln for ln in output.replace("\r", "\n").splitlines() if ln.startswith("error:")]
        reason = errors[-1][len("error:"):].strip() if errors else ""
    except OSError:
        pass
    text = str(exc)
    if not reason:
        m = re.search(r"StageFailed: (.*)", text)
        state = re.search(r"state: ?([A-Z_]+)", text)
        reason = (m.group(1).strip() if m else f"the job ended without a result (state {state.group(1)})" if state
                  else " ".join(text.split())[:300] or "the job failed")
        missing = _import_failure(output, text)
        if missing:  # the stage (or the job itself) failed on an import
            reason += f": {missing_line(missing)}"
    return f"{j.what} failed on the cluster (job {j.job.job_id}): {reason}; its log: {log_path}"


def _import_failure(log_text: str, exc_text: str) -> str | None:
    """The module whose import ended a failed job: its stage's (exit status 1, the stage's output in the log
    before submitit's report of the job's exception ending with the ``ModuleNotFoundError``), or the job's own
    (the traceback of ``exc_text``, submitit's, ending with it). None when the stage was killed, or failed
    otherwise."""
    stage = re.search(r"StageFailed: .* exited with status (\d+)", exc_text)
    if stage:
        return missing_module(int(stage[1]), re.split(r"^submitit ERROR", log_text, maxsplit=1, flags=re.M)[0])
    trace = re.search(r"with trace:\n-+\n(.*?)\n-+\n", exc_text, re.S)
    return missing_module(1, trace[1]) if trace else None  # a job that raised exits with status 1


def run_on_cluster(todo: list, settings: SlurmSettings, cluster: str, folder: Path, name: str,
                   after_each=lambda: None) -> list[dict]:
    """Every variant of ``todo`` through cluster jobs (records in its order, as ``runner.run_variants``)."""
    from stage2_generate.compare.cache import done_marker, stage1_key, stage1_marker, variant_paths
    from stage2_generate.compare.runner import (log_reused, log_stage1_reused, mark_done, mark_stage1,
                                                variant_record, write_run_config)

    n = len(todo)
    records: dict[str, dict] = {}
    to_run: dict[Path, list] = {}  # results folder -> its variants (the first runs, the others reuse)
    for i, v in enumerate(todo):
        _, _, results = variant_paths(v.cfg)
        record = variant_record(v, results)
        if done_marker(results).is_file():
            log_reused(v, i + 1, n, results)
            records[v.name] = {**record, "reused": "both stages"}
        elif results in to_run:
            records[v.name] = {**record, "reused": "both stages"}  # the same result as an earlier variant's
            to_run[results].append(v)
        else:
            to_run[results] = [v]
    if not to_run:
        return [records[v.name] for v in todo]
    runs = [vs[0] for vs in to_run.values()]
    index = {v.name: i + 1 for i, v in enumerate(todo)}
    config = {v.name: write_run_config(v) for v in runs}

    cl = _Cluster(folder, settings, cluster, name)
    log.info("compare %s: %d variant%s to run as cluster jobs (%s; %s), logs in %s", name, len(runs),
             "s" * (len(runs) > 1), settings.describe(), "SLURM" if cluster == "slurm" else "submitit's local "
             "executor", folder)
    groups: dict[Path, list] = {}  # stage-1 marker -> the variants sharing that stage 1
    for v in runs:
        _, store_dir, _ = variant_paths(v.cfg)
        groups.setdefault(stage1_marker(store_dir, v.cfg), []).append(v)
    reused = {}
    phase1: list[tuple[Path, _Job]] = []
    try:
        for marker, vs in groups.items():
            for v in vs:  # the first of them runs a stage 1 still missing; the others reuse it
                reused[v.name] = "stage 1" if marker.is_file() or v is not vs[0] else "nothing"
            if marker.is_file():
                for v in vs:
                    log_stage1_reused(v, index[v.name], n, marker.parent, marker)
                continue
            first = vs[0]
            job = cl.submit("stage1_decode", config[first.name], f"variant {first.name!r}, stage 1",
                            f"s1-{stage1_key(first.cfg)}", vs)
            log.info("stage 1 of %s (feature store %s), for variants %s: job %s, log %s", stage1_key(first.cfg),
                     marker.parent, ", ".join(v.name for v in vs), job.job.job_id, job.job.paths.stderr)
            phase1.append((marker, job))
    except BaseException:  # sbatch refused one: the others are not left behind
        _cancel([job for _, job in phase1])
        raise

    def stage1_done(j: _Job) -> None:
        marker = next(m for m, job in phase1 if job is j)
        mark_stage1(marker, j.variants[0], config[j.variants[0].name])
        log.info("stage 1 of %s computed once, for variants %s (job %s, %.0f s)", stage1_key(j.variants[0].cfg),
                 ", ".join(v.name for v in j.variants), j.job.job_id, time.time() - j.t0)

    cl.wait([job for _, job in phase1], stage1_done)

    phase2: list[_Job] = []
    try:
        for v in runs:
            _, _, results = variant_paths(v.cfg)
            job = cl.submit("stage2_generate", config[v.name], f"variant {v.name!r}, stage 2",
                            f"s2-{results.parent.name}", [v])
            log.info("variant %d/%d %r: stage 2 (results %s): job %s, log %s", index[v.name], n, v.name, results,
                     job.job.job_id, job.job.paths.stderr)
            phase2.append(job)
    except BaseException:
        _cancel(phase2)
        raise
    # when each variant started: its stage-1 job's submission, or its stage-2 job's
    t0 = {v.name: job.t0 for _, job in phase1 for v in job.variants}

    def stage2_done(j: _Job) -> None:
        v = j.variants[0]
        _, _, results = variant_paths(v.cfg)
        mark_done(done_marker(results), v, variant_record(v, results), t0.get(v.name, j.t0))
        records[v.name] = {**variant_record(v, results), "reused": reused[v.name]}
        log.info("variant %d/%d %r: done (job %s, %.0f s)", index[v.name], n, v.name, j.job.job_id,
                 time.time() - j.t0)
        after_each()

    cl.wait(phase2, stage2_done)
    return [records[v.name] for v in todo]
