"""Console script ``npp-generate`` (same as ``python -m stage2_generate``)."""

from shared.cli import run_module
from stage2_generate import __doc__ as DESCRIPTION
from stage2_generate.compare import add_arguments as compare_arguments
from stage2_generate.compare import compare_verb
from stage2_generate.export import add_arguments as export_arguments
from stage2_generate.export import export_verb
from stage2_generate.pipeline import VERBS as RUN_VERBS

VERBS = {
    **RUN_VERBS,
    "compare": (compare_verb, "run every variant of a compare file (e.g. configs/ablations/layers.yaml) through both "
                              "stages, reusing cached products; write table, paired stats, bars and grid under "
                              "results/compare/<name>/", compare_arguments),
    "export": (export_verb, "figures and files from finished runs (an experiment config or a compare file), "
                            "re-running nothing: grids of chosen methods/variants, subjects, ROIs and images as "
                            "PNG and PDF, the Shen et al. 2019 layout, one HDF5 file", export_arguments),
}


def main() -> None:
    run_module("npp-generate", DESCRIPTION, VERBS)
