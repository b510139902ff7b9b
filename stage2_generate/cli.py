"""Console script ``npp-generate`` (same as ``python -m stage2_generate``)."""

from shared.cli import run_module
from stage2_generate import __doc__ as DESCRIPTION
from stage2_generate.pipeline import VERBS


def main() -> None:
    run_module("npp-generate", DESCRIPTION, VERBS)
