"""Stage 2 ablations on the demo: each loss removed in turn, and each kind of training input.

Runs ``python -m stage2_generate run`` once per variant of the config (stage 1 must have
run; its feature store is shared), each variant's results under
``work/<experiment>/ablations/<variant>/``, and writes two tables, scored by the
independent judge, beside the pixel-ridge baseline:

* ``<results>/ablation_losses.md``: all losses, then one row per loss removed;
* ``<results>/ablation_inputs.md``: the generator trained on true, corrupted,
  out-of-fold or mixed inputs (all tested on decoded features);

and ``<results>/ablations.json`` with every row. A variant whose generator is already
trained (same settings) is only re-scored, so the row of the config itself reuses
``make demo``'s generator.

    python bench/stage2_ablations.py                       # configs/demo.yaml, about 9 min per variant on 2 cores
    python bench/stage2_ablations.py --only losses --roi VC
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from shared.config import load_config
from shared.report import markdown_table

LOSSES = ["adversarial", "pixel", "perceptual", "feature_matching", "feature_consistency"]
INPUTS = ["true", "corrupted", "oof", "mix"]
COLUMNS = ["variant", "method", "pixcorr", "ssim", "alexnet2", "alexnet5", "pairwise_id_pixel", "nway10_id_pixel"]


def variants(cfg, only: str) -> dict[str, dict[str, list[str]]]:
    g = cfg.generator
    out: dict[str, dict[str, list[str]]] = {}
    if only in ("all", "losses"):
        out["losses"] = {"all losses": []}
        for name in LOSSES:
            if getattr(g, f"loss_{name}") > 0:
                out["losses"][f"without {name}"] = [f"generator.loss_{name}=0"]
    if only in ("all", "inputs"):
        out["inputs"] = {f"trained on {kind}" + (" (config)" if kind == g.train_inputs else ""):
                         [f"generator.train_inputs={kind}"] for kind in INPUTS}
    return out


def run_variant(config: str, name: str, sets: list[str], base: Path) -> dict:
    slug = name.replace(" ", "_").replace("(", "").replace(")", "")
    results = base / slug
    cmd = [sys.executable, "-m", "stage2_generate", "run", "--config", config, "--set", f"results_dir={results}",
           "--set", "eval.save_reconstructions=false", "--set", f"eval.baselines={'false' if sets else 'true'}",
           *[a for s in sets for a in ("--set", s)]]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"variant '{name}' failed: {proc.stderr.strip().splitlines()[-1]}")
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    return json.loads(next(results.glob("*/metrics.json")).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--only", choices=["all", "losses", "inputs"], default="all")
    ap.add_argument("--roi", default=None, help="ROI of the tables (default: the config's first)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    roi = args.roi or cfg.data.rois[0]
    subject = cfg.data.subjects[0]
    suffix = "" if roi == cfg.data.rois[0] else f"[{roi}]"
    base = cfg.work_path / "ablations"
    done: dict[tuple, dict] = {}
    report: dict[str, list[dict]] = {}
    for table, rows in variants(cfg, args.only).items():
        report[table] = []
        for name, sets in rows.items():
            key = tuple(sorted(sets)) if sets != [f"generator.train_inputs={cfg.generator.train_inputs}"] else ()
            if () not in done:  # the config itself, with the baselines
                done[()] = run_variant(args.config, "config", [], base)
            if key not in done:
                done[key] = run_variant(args.config, name, sets, base)
            rec = done[key]["reconstruction"][subject]
            report[table].append({"variant": name, "method": "wgan_gp", **rec[f"wgan_gp{suffix}"]})
        baseline = done[()]["reconstruction"][subject][f"pixel_ridge{suffix}"]
        report[table].append({"variant": "baseline", "method": "pixel_ridge", **baseline})
    out = cfg.results_path
    out.mkdir(parents=True, exist_ok=True)
    for table, rows in report.items():
        text = (f"{subject} {roi}, {next(iter(cfg.data.test))} test images, generator from decoded features; "
                f"`python bench/stage2_ablations.py --config {args.config}`\n\n" + markdown_table(rows, COLUMNS))
        (out / f"ablation_{table}.md").write_text(text)
        print(f"\n## {table}\n\n{text}")
    (out / "ablations.json").write_text(json.dumps({"roi": roi, "subject": subject, **report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
