"""Console script ``npp-generate`` (same as ``python -m stage2_generate``)."""

from shared.cli import Lazy, run_module
from stage2_generate import __doc__ as DESCRIPTION


def _verb(target: str) -> Lazy:
    """A stage-2 verb imported when it runs (``Lazy``: a refused config need not import torch)."""
    return Lazy(f"stage2_generate.{target}")


VERBS = {
    "run": (_verb("pipeline:run"),
            "train the generator on stage 1's out-of-fold decoded features (resumable; torchrun for several processes; "
            "a validation hold-out, decoded like the test images, chooses the tick), reconstruct the test images with "
            "it and the methods of methods.run, score them beside the baselines, write tables, grids and every "
            "reconstruction"),
    "compare": (_verb("compare:compare_verb"),
                "run every variant of a compare file (e.g. configs/ablations/layers.yaml) through both stages, reusing "
                "cached products; write table, paired stats, bars and grid under <results_dir>/compare/<name>/",
                _verb("compare:add_arguments"),
                {"config": "compare file, e.g. configs/ablations/layers.yaml",
                 "dry_run": "print every variant's resolved config and exit"}),
    "export": (_verb("export:export_verb"),
               "figures and files from finished runs (an experiment config or a compare file), re-running nothing: "
               "grids of chosen methods/variants, subjects, ROIs and images as PNG and PDF, the Shen et al. 2019 "
               "layout, one HDF5 file", _verb("export:add_arguments"),
               {"config": "experiment YAML file or compare file, e.g. configs/demo.yaml or configs/ablations/layers.yaml",
                "dry_run": "print what would be written (folder, figures, rows, images, pages) and exit"}),
}


def main() -> None:
    run_module("npp-generate", DESCRIPTION, VERBS)
