"""The randomized soak test of the lock protocol (``make soak``; a short version in ``tests/test_soak.py``).

On a tiny simulated experiment, each round starts stage-1 processes (every shard of ``--shard I/N``, or an
unsharded one, maybe one more beside them), stage-2 runs and (``--compare P``: in that share of the rounds)
one or two ``compare`` processes (``tools/soak_compare.py``) in a random order with random delays, all with
``N2P_WAIT_FOR_LOCKS=1`` (as ``compare`` runs its stages), and SIGKILLs a random subset of them at random
points: through ``N2P_FAILPOINT`` (a random failpoint and hit count, shared/faults.py) or from here after a
random delay (with the processes a compare started). Up to three waves of reruns follow (a killed process's
command again, unharmed; a refused one's as it was), then an unsharded stage 1, a stage 2 and each compare
finish whatever is left. The round passes when its store, tables and checkpoints equal those of one clean
serial run (``tools/soak_checks.py``), nothing is left behind (temporary files, lock holders' name files, held
locks, live processes), every process ended as it may (finished; killed as planned; stage 2 refused in one
line while the store is incomplete) and no process ran or waited for a lock longer than the bound. Processes
are forked from this one once it has imported both stages, or with ``--spawn`` started as fresh interpreters
(``tools/soak_procs.py``).

Every round's schedule comes from ``random.Random("<seed>:<round>")``, so ``--round R`` replays round R's
schedule (the kills from here land where the timing puts them). A failing round prints one line naming the
seed, the round and what differed, with the command that replays it, keeps its folder and exits 1.

    python -m tools.soak --rounds 50 --seed 0 --compare 0.2 [--round R] [--out results/reference/bench/soak.txt]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy's and torch's thread pools start: forks inherit them

import argparse  # noqa: E402 - after the thread count
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shared.simulate.tiny import TINY
from tools import soak_compare
from tools.soak_procs import MODULES, ROOT, Ended, Hang, Launch, preload, run_wave


SOAK = TINY  # the tests' tiny experiment: conv3_4 at 32 px has 16,384 units, decoded whole or in parts
PART_UNITS = [0, 4000, 6000, 9000]  # per round: whole layers, or conv3_4 in 5, 3 or 2 parts (fc7 in 1 or 2)
# (failpoint, most hits) per stage: where a process may be made to SIGKILL itself (shared/faults.py); one serial
# stage 1 reaches write 13-17 times, features.batch 5, decode.chunk 22; a stage 2 write 17, train.step 4,
# checkpoint.write 3 (the last: generator.pt), best.write 1
FAILPOINTS = {
    "stage1": [("features.batch", 5), ("decode.chunk", 12), ("write", 12), ("write.done.json", 2),
               ("write.metrics.json", 1)],
    "stage2": [("train.step", 4), ("checkpoint.write", 3), ("best.write", 1), ("write", 17),
               ("write.metrics.json", 1), ("write.per_image.json", 1)],
    "compare": [("compare.variant", 1)],  # its variant's stages inherit N2P_FAILPOINT: none of theirs here
}
SECONDS = {"stage1": 4.0, "stage2": 6.0, "compare": 20.0}  # about how long a forked process of each kind runs
STARTUP = 4.0  # seconds more a fresh interpreter takes to import both stages (--spawn)
RERUN_WAVES = 3  # waves of reruns before the finishing runs
NOT_READY = "stage 1"  # stage 2's one-line refusal of an incomplete store names stage 1 (run / rerun it)
# stage 1 writing the scores after a stage 2 has written its results (the last stage-1 process was killed between
# its last item and the scores): metrics.json holds no decoding to compare with, so the reconstructions go
DROPPED = "decoded features changed: removed the old reconstruction results"


def schedule(rng: random.Random, stage2: bool, parts: list[int] = PART_UNITS, most_shards: int = 4,
             startup: float = 0.0, compare: float = 0.0) -> tuple[int, list[Launch]]:
    """A round's ``decoder.part_units`` and its first wave of processes, kills included (at least one): every
    shard of ``--shard I/N`` (N up to ``most_shards``) or one unsharded stage 1, maybe one more stage 1 beside
    them; with ``stage2``, one or two stage-2 runs, most of them a little after stage 1 (early ones find no
    store and are refused); with probability ``compare``, one or two compare processes."""
    part_units = rng.choice(parts)
    n = rng.randint(1, most_shards)
    stage1 = [["--shard", f"{i}/{n}"] for i in range(n)] if n > 1 else [[]]
    if rng.random() < 0.3:  # another process beside them: unsharded, or a second one of some shard
        stage1.append(rng.choice([[], *stage1]))
    launches = [Launch("stage1", args, round(rng.uniform(0.0, 3.0), 2)) for args in stage1]
    launches += [Launch("stage2", [], round(rng.uniform(0.0, 2.0) if rng.random() < 0.25 else rng.uniform(2.5, 7.0), 2))
                 for _ in range(rng.randint(1, 2) if stage2 else 0)]
    if compare and rng.random() < compare:
        launches += [Launch("compare", [rng.choice(soak_compare.NAMES)], round(rng.uniform(0.0, 5.0), 2))
                     for _ in range(rng.randint(1, 2))]
    doomed = [launch for launch in launches if rng.random() < 0.4] or [rng.choice(launches)]
    for launch in doomed:
        if rng.random() < 0.6:
            point, most = rng.choice(FAILPOINTS[launch.stage])
            launch.failpoint = f"{point}:{rng.randint(1, most)}"
        else:
            launch.kill_after = round(rng.uniform(0.2, startup + SECONDS[launch.stage]), 2)
    return part_units, launches


def _verdict(e: Ended, bound: float) -> str | None:
    """What is wrong with how ``e`` ended, or None: finished, killed as planned, or stage 2 refused in one
    line while the store is incomplete."""
    planned = e.launch.failpoint is not None or e.timer_killed
    if e.lingering:
        return f"{e.launch.label} ended and left a process it started running (log: {e.log})"
    if e.waited > bound:
        return f"{e.launch.label} waited {e.waited:.0f} s for locks, over the {bound:.0f}-second bound"
    if e.rc == 0 or (e.killed and planned):
        return None
    if e.rc == 2 and e.launch.stage == "stage2" and NOT_READY in e.last_line():
        return None
    return f"{e.launch.label} ended with exit status {e.rc}: {e.last_line()!r} (log: {e.log})"


@dataclass
class Options:
    """How the rounds are drawn and judged (every one but ``keep_going`` shapes a round's schedule)."""

    stage2_every: int = 1  # stage 2 in rounds r with r % stage2_every == 0
    parts: list[int] = field(default_factory=lambda: list(PART_UNITS))  # the decoder.part_units a round draws
    shards: int = 4  # stage 1 in at most this many shards
    bound: float = 300.0  # seconds any process may run, or wait for locks
    spawn: bool = False  # fresh interpreters instead of forks
    compare: float = 0.0  # the chance that a round has compare processes
    keep_going: bool = False  # play every round, failing ones too

    def replay(self, seed: int, r: int, given: Path | None) -> str:
        """The command that plays round ``r`` again."""
        default = Options()
        options = [(f"--stage2-every {self.stage2_every}", self.stage2_every != default.stage2_every),
                   (f"--parts {' '.join(map(str, self.parts))}", self.parts != default.parts),
                   (f"--shards {self.shards}", self.shards != default.shards),
                   (f"--bound {self.bound:g}", self.bound != default.bound),
                   (f"--compare {self.compare:g}", self.compare != default.compare),
                   (f"--reference {given}", given is not None), ("--spawn", self.spawn)]
        return f"python -m tools.soak --seed {seed} --round {r}" + "".join(f" {o}" for o, used in options if used)


@dataclass
class Tally:
    """What the rounds did, for the summary line."""

    rounds: int = 0
    failed: int = 0
    started: dict = field(default_factory=lambda: dict.fromkeys(MODULES, 0))
    killed: dict = field(default_factory=lambda: dict.fromkeys(MODULES, 0))
    reruns: int = 0
    finishers: int = 0
    refused: int = 0
    dropped: int = 0  # stage-1 runs that removed stage 2's results (recomputed by a later stage 2)
    max_wait: float = 0.0
    longest: float = 0.0

    def add(self, ended: list[Ended]) -> None:
        for e in ended:
            self.started[e.launch.stage] += 1
            self.killed[e.launch.stage] += e.killed
            self.refused += e.rc == 2
            self.dropped += e.launch.stage == "stage1" and DROPPED in e.log.read_text(errors="replace")
            self.max_wait, self.longest = max(self.max_wait, e.waited), max(self.longest, e.seconds)


@dataclass
class Reference:
    """The clean serial run every round is held to."""

    config: dict  # its config (work and results folders aside, a round's is the same)
    work: Path  # <work_dir>/<experiment>
    results: Path  # <results_dir>/<experiment>
    arrays: dict = field(default_factory=dict)
    stage1: dict = field(default_factory=dict)  # part_units -> the folder of a serial stage 1 with them
    compare: Path | None = None  # the folder of a serial compare of each name (soak_compare.py)


def stage1_reference(folder: Path, ref: Reference, part_units: int) -> tuple[Path, Path]:
    """The work and results of a serial stage 1 that splits layers into parts of ``part_units`` (computed once
    in ``<folder>/reference-parts-<part_units>``): what a round's scores are held to."""
    if part_units == ref.config["decoder"].get("part_units", 0):
        return ref.work, ref.results
    here = folder / f"reference-parts-{part_units}"
    cfg = {**ref.config, "work_dir": str(here / "work"), "results_dir": str(here / "results"),
           "decoder": {**ref.config["decoder"], "part_units": part_units}}
    if part_units not in ref.stage1:
        shutil.rmtree(here, ignore_errors=True)
        here.mkdir(parents=True)
        (here / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        _serial(here / "tiny.yaml", [MODULES["stage1"]])
        ref.stage1[part_units] = here
    return here / "work" / cfg["experiment"], here / "results" / cfg["experiment"]


def _serial(config: Path, modules: list[str]) -> None:
    """Each module's ``run`` on ``config``, one process at a time, neither waiting for locks nor killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("N2P_FAILPOINT", None)
    env.pop("N2P_WAIT_FOR_LOCKS", None)
    for module in modules:
        r = subprocess.run([sys.executable, "-m", module, "run", "--config", str(config)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"soak: the serial reference run failed ({module}): {r.stderr.strip()[-500:]}")


def reference(folder: Path, given: Path | None) -> Reference:
    """The serial run in ``given`` (a folder holding its ``tiny.yaml``, e.g. the tests' ``tiny_finished``), or
    one computed in ``<folder>/reference`` now: stage 1, then stage 2, one process each."""
    from tools.soak_checks import arrays

    if given is None:
        given = folder / "reference"
        given.mkdir(parents=True)
        cfg = {**SOAK, "data": {**SOAK["data"], "root": str(folder / "data")}, "work_dir": str(given / "work"),
               "results_dir": str(given / "results")}
        (given / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        _serial(given / "tiny.yaml", [MODULES["stage1"], MODULES["stage2"]])
    cfg = yaml.safe_load((given / "tiny.yaml").read_text())
    ref = Reference(cfg, Path(cfg["work_dir"]) / cfg["experiment"], Path(cfg["results_dir"]) / cfg["experiment"])
    ref.arrays = arrays(ref.work)
    return ref


def rerun(e: Ended, rng: random.Random) -> Launch:
    """The command of a process that did not finish, again: without its kill if it was killed, as it was
    (its failpoint or timer not reached) if it was refused; stage 1 first, stage 2 soon after."""
    delay = round(rng.uniform(0.5, 3.0) if e.launch.stage == "stage2" else rng.uniform(0.0, 1.0), 2)
    if e.killed:
        return Launch(e.launch.stage, e.launch.args, delay)
    return Launch(e.launch.stage, e.launch.args, delay, e.launch.failpoint, e.launch.kill_after)


def _done(results: Path, ref: Reference, stage2: bool) -> bool:
    """Whether the round's work looks finished: every result file of the serial run is there."""
    from tools.soak_checks import STAGE1_RESULTS

    want = [p.relative_to(ref.results) for p in ref.results.glob("*") if p.is_file()
            and (stage2 or STAGE1_RESULTS.match(p.name)) and p.name != "stats.jsonl"]
    return all((results / name).is_file() for name in want)


def play_round(seed: int, r: int, folder: Path, ref: Reference, opts: Options, tally: Tally) -> list[str]:
    """Round ``r``: its processes, the reruns of those killed or refused, what finishes the work, and the
    checks; returns what went wrong (nothing: the round passed)."""
    from tools import soak_checks as checks

    rng = random.Random(f"{seed}:{r}")
    stage2, bound, spawn = r % opts.stage2_every == 0, opts.bound, opts.spawn
    part_units, wave = schedule(rng, stage2, opts.parts, opts.shards, STARTUP if spawn else 0.0, opts.compare)
    here = folder / f"round-{r:03d}"
    shutil.rmtree(here, ignore_errors=True)
    (here / "logs").mkdir(parents=True)
    cfg = {**ref.config, "work_dir": str(here / "work"), "results_dir": str(here / "results"),
           "decoder": {**ref.config["decoder"], "part_units": part_units}}
    config = here / "soak.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work, results = here / "work" / cfg["experiment"], here / "results" / cfg["experiment"]
    names = {launch.args[0] for launch in wave if launch.stage == "compare"}
    if names:
        soak_compare.write_specs(here, cfg, ref.config["decoder"].get("part_units", 0))
    ended: list[Ended] = []
    try:
        last = run_wave(wave, config, here / "logs", bound, spawn=spawn)
        for _ in range(RERUN_WAVES):  # the killed ones again, unharmed; the refused ones again as they were
            ended += last
            again = [rerun(e, rng) for e in last if e.rc != 0]
            last = run_wave(again, config, here / "logs", bound, len(ended), spawn)
            tally.reruns += len(again)
        ended += last
        finish = []
        for stage in ["stage1", *(["stage2"] if stage2 else [])]:
            if not _done(results, ref, stage == "stage2"):
                finish += run_wave([Launch(stage)], config, here / "logs", bound, len(ended) + len(finish), spawn)
        for name in sorted(names):
            if not soak_compare.finished(here, name):
                finish += run_wave([Launch("compare", [name])], config, here / "logs", bound,
                                   len(ended) + len(finish), spawn)
        tally.finishers += len(finish)
        ended += finish
        problems = [v for v in map(lambda e: _verdict(e, bound), ended) if v]
        problems += [f"finishing {e.launch.label} ended with exit status {e.rc}: {e.last_line()!r}" for e in finish
                     if e.rc != 0]
    except Hang as exc:
        problems = [str(exc)]
    tally.add(ended)
    tally.rounds += 1
    if problems:
        return problems
    problems = checks.leftovers(here / "work", here / "results")
    stage1_work, stage1_results = stage1_reference(folder, ref, part_units)
    problems += checks.store_differences(work, ref.arrays, stage1_work)
    problems += checks.results_differences(results, ref.results, stage1_results, stage2)
    if stage2:
        problems += checks.generator_differences(work, ref.work)
    if names:
        ref.compare = ref.compare or soak_compare.compare_reference(folder, ref.config)
        problems += soak_compare.compare_differences(here, ref.compare, names, ref.arrays, cfg["experiment"])
    return problems


def soak(rounds: int, seed: int, folder: Path, given: Path | None = None, opts: Options | None = None,
         only: int | None = None) -> tuple[Tally, list[str]]:
    """Play ``rounds`` rounds (or round ``only``) in ``folder``, held to the serial run in ``given`` (or one
    computed now). Returns the tally and, per failing round, one line naming it, what differed first and its
    replay command (then the other differences). A passed round's folder is deleted; a failing one's kept, and
    the rounds stop there (``opts.keep_going``: they go on)."""
    import tqdm

    opts = opts or Options()
    tqdm.tqdm.monitor_interval = 0  # no monitor thread: this process forks
    if not opts.spawn:
        preload()
    folder = folder.resolve()
    for old in [*([] if given else [folder / "reference"]), *folder.glob("reference-parts-*"),
                folder / "reference-compare"]:
        shutil.rmtree(old, ignore_errors=True)
    ref = reference(folder, given)
    tally, failures = Tally(), []
    for r in tqdm.tqdm([only] if only is not None else range(rounds), desc="soak", unit="round", file=sys.stderr):
        problems = play_round(seed, r, folder, ref, opts, tally)
        if not problems:
            shutil.rmtree(folder / f"round-{r:03d}")
            continue
        tally.failed += 1
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        failures += [f"soak: seed {seed} round {r}: {problems[0]}{more}; its folder {folder / f'round-{r:03d}'}; "
                     f"replay: {opts.replay(seed, r, given)}", *(f"  {p}" for p in problems[1:])]
        if not opts.keep_going:
            break
    return tally, failures


def summary(tally: Tally, seed: int, seconds: float, opts: Options) -> str:
    """The soak's one-line account: rounds, processes, kills, reruns, waits, time, and whether every round
    held."""
    def kinds(counts: dict) -> str:
        return ", ".join(f"{n} {k.replace('stage', 'stage ')}" for k, n in counts.items() if n or k != "compare")

    verdict = ("every round equal to the serial run (store, tables, checkpoints), no lock or temporary file left"
               if not tally.failed else f"{tally.failed} round(s) FAILED")
    return (f"soak: {tally.rounds} rounds (seed {seed}, {'fresh interpreters' if opts.spawn else 'forked processes'}), "
            f"{sum(tally.started.values())} processes ({kinds(tally.started)}; of them {tally.reruns} reruns and "
            f"{tally.finishers} finishing runs), {sum(tally.killed.values())} SIGKILLed ({kinds(tally.killed)}), "
            f"{tally.refused} stage-2 runs refused while the store was incomplete, {tally.dropped} stage-2 results "
            f"removed by a stage 1 finishing later and made again; {verdict}; longest lock wait "
            f"{tally.max_wait:.0f} s, longest process {tally.longest:.0f} s (bound {opts.bound:.0f} s); "
            f"{seconds / 60:.1f} min on {os.cpu_count()} CPU cores")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--round", type=int, dest="only", metavar="R", help="play only round R (replays its schedule)")
    p.add_argument("--stage2-every", type=int, default=1, metavar="K", help="stage 2 only in every K-th round")
    p.add_argument("--bound", type=float, default=300.0, help="seconds any process may run or wait for locks")
    p.add_argument("--parts", type=int, nargs="+", default=PART_UNITS, metavar="UNITS",
                   help="the decoder.part_units a round draws from (0: whole layers)")
    p.add_argument("--shards", type=int, default=4, metavar="N", help="stage 1 in at most N shards")
    p.add_argument("--compare", type=float, default=0.0, metavar="P",
                   help="the chance that a round has compare processes (one or two, of two comparisons sharing "
                   "a cache)")
    p.add_argument("--spawn", action="store_true", help="start every process as a fresh interpreter (python -m ...) "
                   "instead of forking it from this one with both stages imported (seconds more per process)")
    p.add_argument("--folder", type=Path, default=ROOT / "work" / "soak", help="where the rounds run")
    p.add_argument("--reference", type=Path, help="a finished serial run's folder (holding tiny.yaml) to hold "
                   "the rounds to, instead of computing one")
    p.add_argument("--keep-going", action="store_true", help="play every round, failing ones too (exit 1 at the end)")
    p.add_argument("--out", type=Path, help="also write the summary line here")
    args = p.parse_args(argv)
    t0 = time.time()
    opts = Options(args.stage2_every, args.parts, args.shards, args.bound, args.spawn, args.compare, args.keep_going)
    tally, failures = soak(args.rounds, args.seed, args.folder, args.reference, opts, args.only)
    if failures:
        print("\n".join(failures))
        if not args.keep_going:
            return 1
    line = summary(tally, args.seed, time.time() - t0, opts)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    return int(bool(failures))


if __name__ == "__main__":
    sys.exit(main())
