"""Console script ``npp-decode`` (same as ``python -m stage1_decode``) and stage 1's verb table."""

from shared.cli import Lazy, run_module
from stage1_decode import __doc__ as DESCRIPTION


def _verb(target: str) -> Lazy:
    """A stage-1 verb imported when it runs (``Lazy``: a refused config or ``plan`` need not import torch)."""
    return Lazy(f"stage1_decode.{target}")


VERBS = {
    "plan": (_verb("plan:plan_verb"),
             "read a dataset (a BData folder or a .mat / .npz file), print its fingerprint and write the config both "
             "stages run on it (--out; settings from stage1_decode/plan_rules.py)",
             _verb("plan:add_arguments"),
             {"config": "a config to start from (optional; --set names what the file's names do not say, e.g. --set "
                        "data.matrix.train_voxels=NAME)",
              "config_required": False, "dry_run": "print the config instead of writing it"}),
    "download": (_verb("download:download_verb"),
                 "download the Deep Image Reconstruction fMRI files of data.subjects (training, and natural test when "
                 "data.test has it) and their image lists from figshare into data.root (checked against the "
                 "publisher's sizes and MD5s; resumes; needs data.source=bdata)"),
    "run": (_verb("pipeline:run_verb"),
            "simulate data if configured, extract features, decode them (test images, and the training images out of "
            "fold, which stage 2 trains on), score and write results; --shard I/N (or torchrun) for one of several "
            "processes sharing the work", _verb("pipeline:add_run_arguments")),
    "simulate": (_verb("pipeline:simulate"),
                 "only write the simulated experiment (BData files, image lists and images; or one matrix file per "
                 "subject with simulation.format=matrix)"),
    "export-lab": (_verb("labfiles:export_lab_verb"),
                   "write the store's true and decoded features as the lab's per-image .mat files under lab.root"),
    "import-lab": (_verb("labfiles:import_lab_verb"),
                   "read the lab's per-image .mat files under lab.root (lab.import_kind: true_features or decoded) into "
                   "the store"),
}


def main() -> None:
    run_module("npp-decode", DESCRIPTION, VERBS)
