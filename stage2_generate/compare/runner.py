"""Running a compare file's variants: each as the two real commands a user would type (``python -m
stage1_decode run`` and ``python -m stage2_generate run``) on its resolved config, in a subprocess,
each stage skipped when the compare cache (``stage2_generate/compare/cache.py``) holds its products
(reading a finished variant's results back: ``run_results.py``). A "variant" here is one run (``spec.Variant``): with
``seeds``, each seed of a variant is a run of its own, and its seeds share one stage 1.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from shared.children import exit_text, missing_line, missing_module
from shared.config import dump_yaml, to_dict
from shared.errors import UserError
from shared.locks import WAIT_FOR_LOCKS
from shared.runs import atomic_write_json, atomic_write_text
from stage2_generate.compare.cache import done_marker, result_key, stage1_marker, store_key, variant_paths
from stage2_generate.compare.spec import Variant

log = logging.getLogger(__name__)


def _load_prctl():
    """libc's ``prctl``, loaded in compare's own process (a forked child only calls it), or None."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not Linux: a child finishes its stage on its own
        return None


_PRCTL = _load_prctl()


def _die_with_parent(parent: int) -> None:
    """In the child: receive SIGTERM when compare dies (Linux), so a killed compare leaves no stage
    running that holds its variant's lock (and stop at once if it died before this was set up)."""
    import signal

    if _PRCTL is None:
        return
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


_OUTPUT = threading.Lock()  # one writer of the passed-through output at a time (compare --jobs)


class _Stop:
    """What stops a parallel comparison at once: the flag every variant checks before a stage, and the
    stage processes running now (terminated on a failure or Ctrl-C)."""

    def __init__(self):
        self.flag = threading.Event()
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    def check(self) -> None:
        if self.flag.is_set():
            raise _Stopped()

    def stop(self) -> None:
        self.flag.set()
        with self.lock:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()


class _Stopped(Exception):
    """A variant not run because another failed or compare was interrupted."""


def _passed_through(data: bytes, prefix: bytes) -> list[bytes]:
    """Whole lines of a child's output, each after ``prefix``; a progress bar's carriage-return updates
    keep only their last state."""
    lines = [ln.rsplit(b"\r", 1)[-1] for ln in data.split(b"\n")]
    return [prefix + ln + b"\n" for ln in lines if ln.strip() and not ln.startswith(b"error:")]


def _run_stage(module: str, config_path: Path, what: str, prefix: bytes = b"", threads: int = 0,
               stop: _Stop | None = None) -> None:
    """Run ``python -m <module> run --config <config_path>``, its output passed through (each line after
    ``prefix`` when variants run at once; they then wait for each other's locks instead of refusing, and
    use ``threads`` CPU threads each unless OMP_NUM_THREADS is set)."""
    cmd = [sys.executable, "-m", module, "run", "--config", str(config_path)]
    parent = os.getpid()
    env = None
    if prefix:
        env = {**os.environ, WAIT_FOR_LOCKS: "1"}
        if threads and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(threads)
    if stop is not None:
        stop.check()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, preexec_fn=lambda: _die_with_parent(parent))
    if stop is not None:
        with stop.lock:
            stop.procs.add(proc)
        if stop.flag.is_set():
            proc.terminate()
    tail = b""
    pending = b""
    assert proc.stderr is not None
    while True:
        chunk = proc.stderr.read1(4096)
        if not chunk:
            if prefix and pending.strip():  # a last line without its newline
                with _OUTPUT:
                    sys.stderr.buffer.write(b"".join(_passed_through(pending, prefix)))
            break
        tail = (tail + chunk)[-8192:]
        if prefix:  # whole lines only, each marked with its variant
            pending += chunk
            *whole, pending = pending.split(b"\n")
            lines = _passed_through(b"\n".join(whole), prefix) if whole else []
        else:
            # the child's own `error:` line is not passed through: compare reports it, once, naming the variant
            lines = [ln for ln in chunk.splitlines(keepends=True) if not ln.startswith(b"error:")]
        with _OUTPUT:
            sys.stderr.buffer.write(b"".join(lines))
            sys.stderr.flush()
    rc = proc.wait()
    if stop is not None:
        with stop.lock:
            stop.procs.discard(proc)
        stop.check()  # terminated because another variant failed: not this variant's error
    if rc == 0:
        return
    lines = [ln for ln in tail.decode(errors="replace").replace("\r", "\n").splitlines() if ln.startswith("error:")]
    if rc == 130:
        raise KeyboardInterrupt
    if lines:
        raise UserError(f"{what}: {lines[-1][len('error:'):].strip()} (config {config_path})")
    raise UserError(_death(what, rc, tail.decode(errors="replace"), f"python -m {module} run --config {config_path}"))


def _death(what: str, rc: int, output: str, cmd: str) -> str:
    """One line for a stage that ended without its own ``error:`` line: killed, crashed, or failed on an import
    (then the install command); ``output``: the end of its output."""
    missing = missing_module(rc, output)
    if missing:
        return f"{what} {exit_text(rc)}: {missing_line(missing)}"
    seen = " (its output is above)" if output.strip() else ""
    return f"{what} {exit_text(rc)}{seen}; rerun it alone with {cmd}"


def check_one_judge(variants: list[Variant]) -> None:
    """Refuse, in one line, a comparison whose variants score with different judges (network, weights by
    content, layers, input size): its tables pair every variant's scores with the reference's."""
    from shared.evaluation import check_judge_independent, same_judge

    first = None  # the first variant's name, judge settings (network, layers, input size) and weights
    for v in variants:
        e = v.cfg.eval
        try:
            weights = (e.judge_weights, check_judge_independent(v.cfg))  # (setting, identity)
        except UserError as exc:
            raise UserError(f"variant {v.name!r}: {exc}") from None
        setting = (e.judge_network, tuple(e.judge_layers), e.judge_input_size)
        other, other_setting, other_weights = first = first or (v.name, setting, weights)
        if setting != other_setting or not same_judge(e.judge_network, weights, other_weights):
            raise UserError(f"variant {v.name!r} is scored by another judge ({e.judge_network} {e.judge_weights}, "
                            f"layers {list(e.judge_layers)}, {e.judge_input_size} px) than variant {other!r}; a "
                            f"comparison pairs scores of one judge: set eval.judge_* in 'set', not per variant")


def check_variant_inputs(variants: list[Variant]) -> None:
    """The input checks of both stages, for every variant still to run, before compare writes anything
    (a simulated experiment not yet written is checked by its stage 1)."""
    from shared.config import perceptual_weights
    from shared.datasets import DataSource, check_inputs
    from shared.weights import parse_weights

    seen = set()
    for v in variants:
        c = v.cfg
        try:
            for net, weights in {(c.features.network, c.features.weights), (c.eval.judge_network, c.eval.judge_weights),
                                 (c.generator.perceptual_network, perceptual_weights(c))}:
                if (net, weights) not in seen and parse_weights(weights).kind != "random":  # random: nothing to read
                    from shared.featnet import check_weights  # imports torch: only for weights files

                    check_weights(net, weights)
                    seen.add((net, weights))
            data = json.dumps([to_dict(c)["data"], c.reads_matrix, c.decoder.folds_needed])
            if data not in seen and not (c.data.source == "simulated" and not c.data_root.exists()):
                check_inputs(DataSource.of(c), c.decoder.folds_needed)
                seen.add(data)
        except UserError as exc:
            raise UserError(f"variant {v.name!r}: {exc}") from None


_LOCKS: dict[str, threading.Lock] = {}  # a stage-1 marker or a results folder -> the lock its variants take in turn
_LOCKS_GUARD = threading.Lock()


def _turn(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path), threading.Lock())


def run_variants(todo: list[Variant], jobs: int, after_each=lambda: None) -> list[dict]:
    """Every variant of ``todo`` (records in its order), ``jobs`` at once: variants sharing a stage-1
    configuration take it in turn, so the first runs it and the others reuse it. With ``jobs`` > 1 every stage 1
    still to run is queued first (stage-1 processes of one store write side by side), then the variants whose store
    has none pending, then the rest: a stage 1 cannot write a store while a stage 2 reads it, so one queued behind a
    training would leave its worker idle for the whole training. The first failure (or Ctrl-C) stops everything:
    running stages are terminated, the rest never start, and the failure is reported in one line."""
    if jobs <= 1:
        records = []
        for i, v in enumerate(todo):
            records.append(run_variant(v, i + 1, len(todo)))
            after_each()
        return records
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log.info("running %d variants, %d at once (%d CPU threads each)", len(todo), jobs, threads)
    stop = _Stop()
    firsts = _stage1_firsts(todo)
    if len(firsts) > 1:
        log.info("%d stage-1 configurations to run first, %d at once", len(firsts), jobs)
    pending = {variant_paths(v.cfg)[1] for _, v in firsts}
    order = sorted(range(len(todo)), key=lambda i: variant_paths(todo[i].cfg)[1] in pending)  # stable
    out = _in_pool([(run_stage1, (v, i + 1, len(todo), f"[{v.name}] ".encode(), threads, stop)) for i, v in firsts]
                   + [(run_variant, (todo[i], i + 1, len(todo), f"[{todo[i].name}] ".encode(), threads, stop))
                      for i in order], jobs, stop)
    ran, done = out[:len(firsts)], out[len(firsts):]
    records: list[dict] = [{}] * len(todo)
    for k, i in enumerate(order):
        records[i] = done[k]
    for (i, _), did in zip(firsts, ran):  # its stage 1 ran here, ahead of its stage 2
        if did and records[i]["reused"] == "stage 1":
            records[i] = {**records[i], "reused": "nothing"}
    for _ in records:
        after_each()
    return records


def _stage1_firsts(todo: list[Variant]) -> list[tuple[int, Variant]]:
    """The first variant (with its index) of each stage-1 configuration that a variant still to run needs and
    the cache does not hold yet."""
    firsts: dict[str, tuple[int, Variant]] = {}
    for i, v in enumerate(todo):
        _, store_dir, results = variant_paths(v.cfg)
        marker = stage1_marker(store_dir, v.cfg)
        if not done_marker(results).is_file() and not marker.is_file():
            firsts.setdefault(str(marker), (i, v))
    return list(firsts.values())


def _in_pool(calls: list[tuple], jobs: int, stop: _Stop) -> list:
    """``calls`` (``(function, args)``) ``jobs`` at once; their results in order. The first failure stops the
    others (``stop``) and is raised."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if not calls:
        return []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(f, *args) for f, args in calls]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()
    except BaseException:
        stop.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [f.result() for f in futures]


def run_variant(v: Variant, i: int, n: int, prefix: bytes = b"", threads: int = 0, stop: _Stop | None = None) -> dict:
    """Both stages of one variant, each skipped when its products are cached; returns its record.
    ``prefix``: the variant runs beside others (``compare --jobs``), its output lines marked with it, its
    stages on ``threads`` CPU threads, stopped by ``stop``."""
    _, _, results = variant_paths(v.cfg)
    with _turn(results):  # two variants of one result: the second reuses the first's
        return _run_variant(v, i, n, prefix, threads, stop)


def _run_variant(v: Variant, i: int, n: int, prefix: bytes, threads: int, stop: _Stop | None) -> dict:
    _, store_dir, results = variant_paths(v.cfg)
    done_path = done_marker(results)
    record = variant_record(v, results)
    if done_path.is_file():
        log_reused(v, i, n, results)
        return {**record, "reused": "both stages"}
    config_path = write_run_config(v)
    t0 = time.time()
    reused = "nothing" if run_stage1(v, i, n, prefix, threads, stop, config_path) else "stage 1"
    log.info("variant %d/%d %r: stage 2 (results %s)", i, n, v.name, results)
    _run_stage("stage2_generate", config_path, f"variant {v.name!r}, stage 2", prefix, threads, stop)
    mark_done(done_path, v, record, t0)
    return {**record, "reused": reused}


def run_stage1(v: Variant, i: int, n: int, prefix: bytes = b"", threads: int = 0, stop: _Stop | None = None,
               config_path: Path | None = None) -> bool:
    """Stage 1 of ``v``, unless the cache holds it (then logged as reused); whether this call ran it. A variant
    sharing the stage 1 waits for it rather than repeating it."""
    _, store_dir, _ = variant_paths(v.cfg)
    s1_marker = stage1_marker(store_dir, v.cfg)
    with _turn(s1_marker):
        if s1_marker.is_file():
            log_stage1_reused(v, i, n, store_dir, s1_marker)
            return False
        config_path = config_path or write_run_config(v)
        log.info("variant %d/%d %r: stage 1 (feature store %s)", i, n, v.name, store_dir)
        _run_stage("stage1_decode", config_path, f"variant {v.name!r}, stage 1", prefix, threads, stop)
        mark_stage1(s1_marker, v, config_path)
        return True


# the steps of a variant, shared with compare --launcher slurm (slurm.py)


def write_run_config(v: Variant) -> Path:
    """Write the config the variant's stages run on beside its results; its path."""
    run_cfg, _, results = variant_paths(v.cfg)
    config_path = results / "config.yaml"
    with _turn(config_path):  # under --jobs a variant's queued stage 1 and its own run may write it at once
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, dump_yaml(run_cfg))
    return config_path


def mark_stage1(s1_marker: Path, v: Variant, config_path: Path) -> None:
    """Mark stage 1 of ``v``'s stage-1 configuration finished (by ``v``, on ``config_path``)."""
    atomic_write_json(s1_marker, {"by": v.name, "config": str(config_path),
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def mark_done(done_path: Path, v: Variant, record: dict, t0: float) -> None:
    """Mark variant ``v`` finished (both stages, started at ``t0``)."""
    atomic_write_json(done_path, {"variant": v.name, "result_key": record["result_key"],
                                  "seconds": round(time.time() - t0, 1),
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def log_reused(v: Variant, i: int, n: int, results: Path) -> None:
    done = json.loads(done_marker(results).read_text())
    log.info("variant %d/%d %r: reused (results %s, computed %s)", i, n, v.name, results, done.get("finished"))


def log_stage1_reused(v: Variant, i: int, n: int, store_dir: Path, s1_marker: Path) -> None:
    log.info("variant %d/%d %r: stage 1 reused (feature store %s, decoded by %s)", i, n, v.name, store_dir,
             json.loads(s1_marker.read_text()).get("by"))


def variant_record(v: Variant, results: Path) -> dict:
    """What compare.json keeps of a run: its name, its row (``variant``) and generator ``seed``, keys and folders."""
    return {"name": v.name, "variant": v.row, "seed": v.seed, "changes": v.changes, "result_key": result_key(v.cfg),
            "store_key": store_key(v.cfg), "results": str(results), "config": str(results / "config.yaml")}


def run_variant_record(v: Variant) -> dict | None:
    """The record of a variant that has finished earlier (None if it has not)."""
    _, _, results = variant_paths(v.cfg)
    if not done_marker(results).is_file():
        return None
    return {**variant_record(v, results), "reused": "both stages"}
