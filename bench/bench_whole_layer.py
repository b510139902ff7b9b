"""Measurement: decode a whole VGG19 layer at 224 px with bounded memory.

Runs stage 1 (``python -m stage1_decode run``) on the demo's DIR-sized simulated
experiment (1200 training images x 5 repetitions, about 11,000 VC voxels, 50 test
images) with ``features.input_size=224`` and one layer, by default ``conv1_2``
(64 x 224 x 224 = 3,211,264 units), random weights: true features, decoders, test and
out-of-fold decoded features, scores. Prints the wall time and the peak resident
memory of the stage-1 process (features, decoding and all), and the disk the layer's
store files take. Needs about 35 GB of free disk under ``--work``.

    python bench/bench_whole_layer.py                       # conv1_2, dense ridge
    python bench/bench_whole_layer.py --set decoder.kind=sparse --layer conv5_4

Run it alone (2 cores). Delete ``--work`` afterwards (``rm -rf work/bench_layer``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", default="conv1_2")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--work", default="work", help="work_dir of the run (the store lands in <work>/bench_layer)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    sets = ["experiment=bench_layer", f"work_dir={args.work}", "results_dir=results/bench", "data.rois=[VC]",
            "features.input_size=224", "features.batch_size=16", f"features.layers=[{args.layer}]",
            f"generator.condition_layers=[{args.layer}]", f"generator.consistency_layers=[{args.layer}]",
            *args.overrides]
    cmd = [sys.executable, "-m", "stage1_decode", "run", "--config", args.config]
    for s in sets:
        cmd += ["--set", s]
    print(" ".join(cmd), flush=True)
    t = time.perf_counter()
    rc = subprocess.run(cmd, env={**os.environ}).returncode
    sec = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    store = Path(args.work) / "bench_layer" / "features"
    size = sum(f.stat().st_size for f in store.rglob("*.h5")) / 1024**3 if store.is_dir() else 0
    print(f"exit {rc}; layer {args.layer}; wall {sec:.0f} s; peak RSS of stage 1 {peak:.0f} MB; "
          f"store files {size:.1f} GB")
    sys.exit(rc)


if __name__ == "__main__":
    main()
