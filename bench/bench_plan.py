"""Measurement: a new lab's file through ``plan`` and both stages, unchanged, on this machine's CPU.

Writes the small odd-layout ``.mat`` file of ``shared/simulate/lab_file.py`` (grey 20 x 20 images, trials
on the last axis, no split called "test"), runs ``python -m stage1_decode plan --data FILE --out CONFIG
--device cpu``, then ``stage1_decode run`` and ``stage2_generate run`` with that config and nothing else,
each in a fresh folder, and prints each step's wall time and stage 2's against the CPU budget the planned
config claims (``stage1_decode/plan_rules.py``: about 7 minutes of generator training on 2 cores). Run it
alone: other processes on the cores lengthen every step.

    python bench/bench_plan.py [--out work/bench_plan]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _step(label: str, args: list[str], cwd: Path) -> float:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"error: {label} exited with status {r.returncode} after {seconds:.0f} s")
    print(f"{label}: {seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work/bench_plan", help="a folder, emptied first")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from shared.simulate.lab_file import write_lab_file
    from stage1_decode.plan_rules import CPU_BUDGET_S

    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    write_lab_file(out / "lab_recording.mat")
    config = out / "lab.yaml"
    times = {"plan": _step("plan", ["stage1_decode", "plan", "--data", "lab_recording.mat", "--out", str(config),
                                     "--device", "cpu"], out)}
    times["stage 1"] = _step("stage 1", ["stage1_decode", "run", "--config", str(config)], out)
    times["stage 2"] = _step("stage 2", ["stage2_generate", "run", "--config", str(config)], out)
    print(f"bench_plan: plan {times['plan']:.0f} s, stage 1 {times['stage 1']:.0f} s, stage 2 {times['stage 2']:.0f} s "
          f"on {os.cpu_count()} CPU cores; stage 2 / the CPU budget's {CPU_BUDGET_S} s of training: "
          f"{times['stage 2'] / CPU_BUDGET_S:.2f}")
    (out / "times.json").write_text(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
