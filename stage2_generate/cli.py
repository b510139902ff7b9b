"""Console script ``npp-generate`` (same as ``python -m stage2_generate``)."""

from shared.cli import run_module
from stage2_generate import __doc__ as DESCRIPTION
from stage2_generate.compare import add_arguments as compare_arguments
from stage2_generate.compare import compare_verb
from stage2_generate.pipeline import VERBS as RUN_VERBS

VERBS = {
    **RUN_VERBS,
    "compare": (compare_verb, "run every variant of a compare file (e.g. configs/ablations/layers.yaml) through both "
                              "stages, reusing cached products; write table, paired stats, bars and grid under "
                              "results/compare/<name>/", compare_arguments),
}


def main() -> None:
    run_module("npp-generate", DESCRIPTION, VERBS)
