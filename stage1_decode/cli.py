"""Console script ``npp-decode`` (same as ``python -m stage1_decode``)."""

from shared.cli import run_module
from stage1_decode import __doc__ as DESCRIPTION
from stage1_decode.pipeline import VERBS


def main() -> None:
    run_module("npp-decode", DESCRIPTION, VERBS)
