"""Measurement: a shipped comparison from scratch with ``compare --jobs 1`` and with ``--jobs N``.

Runs ``python -m stage2_generate compare --config configs/ablations/layers.yaml --jobs J`` for
J = 1 and J = N (default 2), each in its own empty folders (data, work, results under
``--out/jobs-J``), so nothing is reused between them, and prints each wall time and their ratio.
It then compares the two ``table.csv``: with ``--jobs N`` each stage runs on cores / N threads
(``OMP_NUM_THREADS``), and floating-point sums over another thread count differ in their last digits,
which generator training can carry into its scores; the baselines do not move. (With one thread count
for both, the tables are byte-identical: ``tests/test_compare.py``.) Run it alone: on 2 cores the pair
takes about an hour. ``--report``: only print the report of runs already in ``--out`` (each folder's
``seconds.txt`` holds its wall time).

    python bench/bench_compare_jobs.py                 # layers.yaml, --jobs 1 against --jobs 2
    python bench/bench_compare_jobs.py --jobs 4 --compare configs/ablations/losses.yaml
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", default="configs/ablations/layers.yaml")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="work/bench_jobs", help="folder of both runs (deleted first)")
    p.add_argument("--report", action="store_true", help="do not run; report the runs already in --out")
    args = p.parse_args()
    seconds = {}
    for jobs in (1, args.jobs):
        out = Path(args.out) / f"jobs-{jobs}"
        if not args.report:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            cmd = [sys.executable, "-m", "stage2_generate", "compare", "--config", args.compare, "--jobs", str(jobs),
                   "--seeds", "1",  # one seed, as the committed measurement was made
                   "--set", f"data.root={out / 'data'}", "--set", f"work_dir={out / 'work'}",
                   "--set", f"results_dir={out / 'results'}"]
            t0 = time.time()
            with open(out / "log.txt", "w") as log:
                rc = subprocess.run(cmd, stderr=log, stdout=log).returncode
            if rc != 0:
                sys.exit(f"compare --jobs {jobs} failed (exit {rc}); see {out / 'log.txt'}")
            (out / "seconds.txt").write_text(f"{time.time() - t0:.0f}\n")
        seconds[jobs] = float((out / "seconds.txt").read_text())
    name = Path(args.compare).stem
    tables = [Path(args.out) / f"jobs-{j}" / "results" / "compare" / name for j in (1, args.jobs)]
    print(f"compare {args.compare} from scratch on {os.cpu_count()} CPU cores")
    for jobs, s in seconds.items():
        print(f"  --jobs {jobs}: {s:.0f} s")
    print(f"  --jobs {args.jobs} takes x{seconds[args.jobs] / seconds[1]:.2f} the time of --jobs 1")
    same = (tables[0] / "table.md").read_text() == (tables[1] / "table.md").read_text()
    print(f"  table.md identical: {'yes' if same else 'no'}")
    if not same:
        print("  " + table_differences(tables[0] / "table.csv", tables[1] / "table.csv"))


def table_differences(a: Path, b: Path) -> str:
    """Which methods' cells differ between two compare tables, and the largest difference of a mean."""
    import csv

    rows = list(zip(csv.DictReader(open(a)), csv.DictReader(open(b))))
    cells, differ, methods, largest = 0, 0, set(), (0.0, "")
    for r, s in rows:
        for key in r:
            try:
                x, y = float(r[key]), float(s[key])
            except ValueError:
                continue
            cells += 1
            if x != y:
                differ += 1
                methods.add(r["method"])
                if not key.endswith(("_lo", "_hi")) and abs(x - y) > largest[0]:
                    largest = (abs(x - y), key)
    return (f"{differ} of {cells} cells differ, all in rows of {', '.join(sorted(methods))}; the largest difference "
            f"of a mean: {largest[0]:.3f} ({largest[1]})")


if __name__ == "__main__":
    main()
